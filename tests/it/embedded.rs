//! The embedded PostgreSQL cluster the server runs when no database URL is configured.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use testkit::wait::eventually;

use crate::support::{self, ServerProcess, postmaster_pid, process_alive, run};

fn data_dir_env(dir: &std::path::Path) -> String {
    dir.join("postgres").display().to_string()
}

#[tokio::test]
async fn data_survives_a_restart_and_the_cluster_stops_with_the_server() {
    let scratch = testkit::scratch_dir("embedded");
    let data_dir = data_dir_env(&scratch);
    let env = [("CROSSTRADE_DATA_DIR", data_dir.as_str())];

    let server = ServerProcess::start("serve", &env);
    let ready = support::http()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let postmaster = postmaster_pid(std::path::Path::new(&data_dir)).expect("cluster running");

    // PostgreSQL refuses root: the cluster runs as the unprivileged account instead.
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    let expected_uid = if me == 0 { postgres_uid() } else { me };
    assert_eq!(support::process_uid(postmaster), expected_uid);

    // A verb while the server runs uses the server's cluster.
    let added = run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "kept@example.com",
            "--tier",
            "elite",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    assert!(added.status.success(), "{}", support::stderr(&added));

    // A second server on the same data directory is refused, naming the holder.
    let second = run(&env, &["serve"], "");
    assert!(!second.status.success());
    let message = support::stderr(&second);
    assert!(
        message.contains("is in use by another crosstrade process") && message.contains("server"),
        "{message}"
    );

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        !process_alive(postmaster),
        "the cluster outlived the server"
    );

    // Start again: the same cluster, the data intact.
    let listed = run(&env, &["users", "list"], "");
    assert!(listed.status.success(), "{}", support::stderr(&listed));
    assert!(support::stdout(&listed).contains("kept@example.com\telite"));
    // The verb started the cluster itself and stopped it when done.
    assert!(
        eventually(Duration::from_secs(5), async || postmaster_pid(
            std::path::Path::new(&data_dir)
        )
        .is_none_or(|pid| !process_alive(pid)))
        .await,
        "a verb left its cluster running"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[tokio::test]
async fn a_cluster_left_by_a_killed_server_is_adopted_and_stopped() {
    let scratch = testkit::scratch_dir("embedded-kill");
    let data_dir = data_dir_env(&scratch);
    let env = [("CROSSTRADE_DATA_DIR", data_dir.as_str())];

    let server = ServerProcess::start("serve", &env);
    let first_postmaster = postmaster_pid(std::path::Path::new(&data_dir)).unwrap();
    support::signal(server.pid(), "KILL");
    drop(server);
    assert!(
        process_alive(first_postmaster),
        "PostgreSQL runs on after its server is killed"
    );

    // The lock died with the process, so a new server takes over the running cluster.
    let server = ServerProcess::start("serve", &env);
    let ready = support::http()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(server.terminate().success());
    assert!(!process_alive(first_postmaster));
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[tokio::test]
async fn a_deep_data_directory_leaves_no_socket_directory_behind() {
    let scratch = testkit::scratch_dir("embedded-deep");
    let deep = scratch.join("d".repeat(40)).join("postgres");
    let data_dir = deep.display().to_string();
    let env = [("CROSSTRADE_DATA_DIR", data_dir.as_str())];

    let server = ServerProcess::start("serve", &env);
    let socket_dir = store::cluster::socket_dir_for(&std::fs::canonicalize(&deep).unwrap());
    assert!(
        !socket_dir.starts_with(&scratch),
        "a data directory this deep gets its socket directory under the temp dir"
    );
    let holds_socket = std::fs::read_dir(&socket_dir)
        .unwrap()
        .flatten()
        .any(|entry| entry.file_name().to_string_lossy().starts_with(".s.PGSQL."));
    assert!(holds_socket, "no socket in {}", socket_dir.display());

    assert!(server.terminate().success());
    assert!(
        !socket_dir.exists(),
        "{} outlived its cluster",
        socket_dir.display()
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

fn postgres_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .and_then(|line| line.split(':').nth(2))
        .and_then(|uid| uid.parse().ok())
        .expect("postgres account")
}

#[tokio::test]
async fn dev_seeds_demo_accounts_and_prints_how_to_connect() {
    let scratch = testkit::scratch_dir("dev");
    let data_dir = data_dir_env(&scratch);
    let env = [("CROSSTRADE_DATA_DIR", data_dir.as_str())];

    let server = ServerProcess::start("dev", &env);
    let ready = support::http()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Browser-based MCP clients on this computer (the MCP Inspector) may call the endpoint in
    // development; other origins still may not.
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for (origin, status) in [
        ("http://localhost:6274", 401),
        ("http://127.0.0.1:6274", 401),
        ("https://evil.example", 403),
        ("http://localhost.evil.example", 403),
    ] {
        let answer = support::http()
            .post(server.url("/v1/api/mcp"))
            .header("origin", origin)
            .header("accept", "application/json, text/event-stream")
            .json(&ping)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{origin}");
    }
    assert!(
        eventually(Duration::from_secs(5), async || server
            .stdout
            .lock()
            .unwrap()
            .len()
            >= 10)
        .await
    );
    let banner = server.stdout.lock().unwrap().join("\n");
    assert!(
        banner.contains("MCP server URL: http://127.0.0.1:8080/v1/api/mcp"),
        "{banner}"
    );
    assert!(
        banner.contains(
            "claude mcp add --transport http crosstrade http://127.0.0.1:8080/v1/api/mcp"
        ),
        "{banner}"
    );
    let password_of = |email: &str| {
        banner
            .lines()
            .find(|line| line.contains(email))
            .and_then(|line| line.split("password: ").nth(1))
            .map_or_else(
                || panic!("no credentials for {email} in {banner}"),
                str::to_owned,
            )
    };
    let elite_password = password_of("elite@demo.crosstrade.test");
    assert!(elite_password.len() >= 16);
    assert!(password_of("pro@demo.crosstrade.test").len() >= 16);
    assert!(server.terminate().success());

    // The printed credentials are the stored ones, and a second run prints the same.
    let listed = run(&env, &["users", "list"], "");
    let listing = support::stdout(&listed);
    assert!(
        listing.contains("elite@demo.crosstrade.test\telite"),
        "{listing}"
    );
    assert!(
        listing.contains("pro@demo.crosstrade.test\tpro"),
        "{listing}"
    );
    let server = ServerProcess::start("dev", &env);
    assert!(
        eventually(Duration::from_secs(5), async || server
            .stdout
            .lock()
            .unwrap()
            .len()
            >= 10)
        .await
    );
    let again = server.stdout.lock().unwrap().join("\n");
    assert!(again.contains(&elite_password), "{again}");
    let logs = server.logs();
    let status = server.terminate();
    assert!(status.success(), "{status}: {logs}");
    std::fs::remove_dir_all(&scratch).unwrap();
}
