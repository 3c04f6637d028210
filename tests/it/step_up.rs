//! Step-up end to end with the official MCP SDK clients, each pinned (TypeScript from npm,
//! Python from PyPI), against `crosstrade dev --with-addon-sim`, with the person at Debian's
//! Chromium: connected with a read grant, the client calls a trade tool, gets 403
//! `insufficient_scope`, and the person sees one consent screen. When they just click Allow
//! (trade is preselected, as the client asked for it), the client gets a trade grant and the
//! order is placed; when they choose Read again, the client ends with an error after that one
//! consent, not a loop of them. The harnesses (`tests/browser/step-up.mjs`, `step_up.py`) print
//! one JSON line per step; screenshots are kept in `test-artifacts/browser/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::{CHROMIUM, browser_dir, ensure_playwright};
use crate::support::{DevWithAddonSim, ServerProcess, dev_with_addon_sim};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    TypeScript,
    Python,
}

/// What the person does on the step-up consent screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// Just clicks Allow, keeping the preselected permission.
    Allow,
    /// Picks Read only, then Allow.
    ReadAgain,
}

impl Choice {
    fn as_env(self) -> &'static str {
        match self {
            Choice::Allow => "allow",
            Choice::ReadAgain => "mcp:read",
        }
    }
}

/// What a harness printed, and what the server counted.
struct Run {
    events: Vec<Value>,
    end: Value,
    consents_posted: u64,
}

impl Run {
    fn all(&self, event: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == event).collect()
    }

    fn transcript(&self) -> String {
        self.events
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tokio::test]
async fn typescript_sdk_steps_up_when_the_person_allows_trade() {
    let run = step_up(Sdk::TypeScript, Choice::Allow).await;
    assert_read_then_step_up(&run, Sdk::TypeScript, Choice::Allow);
    assert_order_placed(&run);
    // The SDK reports the step-up authorization to the application once, as UnauthorizedError.
    let failed = run.all("call_failed");
    assert_eq!(failed.len(), 1, "{}", run.transcript());
    assert_eq!(failed[0]["name"], "UnauthorizedError");
}

#[tokio::test]
async fn typescript_sdk_ends_with_a_clear_error_when_the_person_chooses_read_again() {
    let run = step_up(Sdk::TypeScript, Choice::ReadAgain).await;
    assert_read_then_step_up(&run, Sdk::TypeScript, Choice::ReadAgain);
    // After the read grant, the retried call meets the same challenge: the SDK stops there,
    // before the application's own limit on retries.
    let failed: Vec<&Value> = run
        .all("call_failed")
        .into_iter()
        .map(|e| &e["name"])
        .collect();
    assert_eq!(
        failed,
        [&json!("UnauthorizedError"), &json!("StreamableHTTPError")],
        "{}",
        run.transcript()
    );
    let error = &run.end["error"];
    assert_eq!(error["name"], "StreamableHTTPError", "{}", run.transcript());
    assert_eq!(error["code"], 403);
    assert_eq!(
        error["message"],
        "Streamable HTTP error: Server returned 403 after trying upscoping"
    );
    assert_no_order(&run);
}

#[tokio::test]
async fn python_sdk_steps_up_when_the_person_allows_trade() {
    let run = step_up(Sdk::Python, Choice::Allow).await;
    assert_read_then_step_up(&run, Sdk::Python, Choice::Allow);
    assert_order_placed(&run);
    // The Python SDK re-authorizes inside the call: the application sees no error at all.
    assert_eq!(run.all("call_failed").len(), 0, "{}", run.transcript());
}

#[tokio::test]
async fn python_sdk_ends_with_an_error_when_the_person_chooses_read_again() {
    let run = step_up(Sdk::Python, Choice::ReadAgain).await;
    assert_read_then_step_up(&run, Sdk::Python, Choice::ReadAgain);
    // The SDK retries the call once with the new (read) token, then hands the 403 back.
    assert_eq!(run.end["error"]["name"], "MCPError", "{}", run.transcript());
    assert_no_order(&run);
}

/// The journey both clients share: the first authorization (asked by the 401 challenge for
/// both scopes) where the person picks Read, a read grant that works, then exactly one more
/// authorization for the trade tool, with trade preselected and no second sign-in.
fn assert_read_then_step_up(run: &Run, sdk: Sdk, choice: Choice) {
    let transcript = run.transcript();
    let authorizations = run.all("authorization");
    let consents = run.all("consent");
    let tokens = run.all("tokens");

    // Bounded: two authorizations, two consent screens, two decisions reaching the server.
    assert_eq!(run.end["authorizations"], 2, "{transcript}");
    assert_eq!(run.end["consents"], 2, "{transcript}");
    assert_eq!(authorizations.len(), 2, "{transcript}");
    assert_eq!(consents.len(), 2, "{transcript}");
    assert_eq!(
        run.consents_posted, 2,
        "consent decisions the server received"
    );

    assert_eq!(
        authorizations[0]["scope"], "mcp:read mcp:trade",
        "{transcript}"
    );
    assert_eq!(consents[0]["signedIn"], true);
    assert_eq!(consents[0]["chose"], "mcp:read");
    assert_eq!(tokens[0]["scope"], "mcp:read", "{transcript}");
    assert_eq!(tokens[0]["refresh"], true);
    let capabilities = run.all("capabilities");
    assert_eq!(capabilities.len(), 1, "{transcript}");
    assert_eq!(capabilities[0]["scope"], "mcp:read", "the read grant works");
    assert_eq!(capabilities[0]["addon_connected"], true);

    // The trade tool's refusal: once when the person allows trade; with Read again, the
    // retried call meets the same challenge once more, and no further call is made.
    let refusals: Vec<&str> = run
        .all("challenge")
        .into_iter()
        .filter(|c| c["status"] == 403)
        .map(|c| c["www_authenticate"].as_str().expect("a 403 challenge"))
        .collect();
    let expected_refusals = match choice {
        Choice::Allow => 1,
        Choice::ReadAgain => 2,
    };
    assert_eq!(refusals.len(), expected_refusals, "{transcript}");
    assert!(refusals.iter().all(|r| *r == refusals[0]), "{transcript}");
    assert!(
        refusals[0].starts_with(r#"Bearer error="insufficient_scope", "#),
        "{transcript}"
    );
    let challenged = refusals[0]
        .split_once(r#" scope=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(scope, _)| scope)
        .expect("the challenge names the scope needed");
    assert!(
        challenged.split(' ').any(|s| s == "mcp:trade"),
        "{transcript}"
    );

    // The step-up request: TypeScript asks for the challenged scope; Python for the union of
    // what it asked before and the challenge (SEP-2350).
    let step_up_scope = match sdk {
        Sdk::TypeScript => challenged,
        Sdk::Python => "mcp:read mcp:trade",
    };
    assert_eq!(authorizations[1]["scope"], step_up_scope, "{transcript}");
    if sdk == Sdk::TypeScript {
        // Its refresh was refused (the read grant ended), so it dropped the tokens.
        assert!(
            run.events
                .iter()
                .any(|e| e["event"] == "invalidate" && e["what"] == "tokens"),
            "{transcript}"
        );
    }
    assert_eq!(
        consents[1]["signedIn"], false,
        "the browser session is kept"
    );
    assert_eq!(consents[1]["offered"], json!(["mcp:read", "mcp:trade"]));
    assert_eq!(
        consents[1]["preselected"], "mcp:trade",
        "the page preselects what the client asked for: {transcript}"
    );
    let last_scope = &tokens.last().expect("tokens")["scope"];
    match choice {
        Choice::Allow => {
            assert_eq!(consents[1]["chose"], Value::Null, "just clicked Allow");
            assert_eq!(*last_scope, "mcp:read mcp:trade", "{transcript}");
        }
        Choice::ReadAgain => {
            assert_eq!(consents[1]["chose"], "mcp:read");
            assert_eq!(*last_scope, "mcp:read", "{transcript}");
        }
    }
}

fn assert_order_placed(run: &Run) {
    let transcript = run.transcript();
    assert_eq!(run.end["error"], Value::Null, "{transcript}");
    let order = &run.end["placeOrder"];
    assert_eq!(order["isError"], false, "{transcript}");
    assert_eq!(order["content"]["state"], "Filled", "{transcript}");
    assert_eq!(order["content"]["instrument"], "ES 12-26");
    assert_eq!(order["content"]["quantity"], 1);
    assert_eq!(run.end["scopeAfter"], "mcp:read mcp:trade");
}

fn assert_no_order(run: &Run) {
    assert_eq!(run.end["placeOrder"], Value::Null, "{}", run.transcript());
}

/// Starts `crosstrade dev --with-addon-sim`, runs the SDK's harness against it as the Elite demo
/// account, and returns what it printed.
async fn step_up(sdk: Sdk, choice: Choice) -> Run {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
    );
    ensure_playwright();
    let (program, script) = match sdk {
        Sdk::TypeScript => (PathBuf::from("node"), "step-up.mjs"),
        Sdk::Python => (ensure_python_sdk(), "step_up.py"),
    };

    let name = format!("step-up-{sdk:?}-{choice:?}").to_lowercase();
    let scratch = testkit::scratch_dir(&name);
    let data_dir = scratch.join("data").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password: password,
    } = dev_with_addon_sim(&data_dir).await;

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/browser");
    let mut harness = tokio::process::Command::new(program);
    harness
        .arg(script)
        .current_dir(browser_dir())
        .env("MCP_URL", format!("{public_url}/v1/api/mcp"))
        .env("EMAIL", "elite@demo.crosstrade.test")
        .env("PASSWORD", &password)
        .env("STEP_UP", choice.as_env())
        .env("CHROMIUM", CHROMIUM)
        .env("ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        harness
            .spawn()
            .expect("start the harness")
            .wait_with_output(),
    )
    .await
    .expect("the harness finished within 60 s")
    .expect("the harness ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "harness failed:\n{stdout}\n{stderr}"
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}\n{stderr}"))
        })
        .collect();
    let end = events
        .last()
        .filter(|e| e["event"] == "end")
        .cloned()
        .unwrap_or_else(|| panic!("no end line:\n{stdout}\n{stderr}"));

    let consents_posted = metric(
        &server,
        r#"http_requests_total{route="/v1/oauth/mcp/consent",method="POST",status="303"}"#,
    )
    .await;
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
    Run {
        events,
        end,
        consents_posted,
    }
}

/// A counter on the admin listener's `/metrics` (0 when the series is absent).
async fn metric(server: &ServerProcess, series: &str) -> u64 {
    let text = crate::support::metrics_text(server).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The official Python SDK at the pinned versions of `tests/browser/requirements.txt`, in a
/// venv under the target directory (rebuilt when the requirements change); returns its Python.
pub(crate) fn ensure_python_sdk() -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("step-up-py");
    let python = venv.join("bin/python");
    let requirements = std::fs::read(browser_dir().join("requirements.txt")).unwrap();
    let installed = venv.join("installed-requirements.txt");
    if python.is_file()
        && std::fs::read(&installed).ok().as_deref() == Some(requirements.as_slice())
    {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let created = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is needed for the Python SDK test");
    assert!(
        created.success(),
        "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    );
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(browser_dir().join("requirements.txt"))
        .status()
        .expect("pip");
    assert!(
        pip.success(),
        "pip install -r tests/browser/requirements.txt failed"
    );
    std::fs::write(&installed, &requirements).unwrap();
    python
}
