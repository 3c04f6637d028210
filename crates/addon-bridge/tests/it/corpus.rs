//! The `addon_frame` fuzz corpus (`fuzz/corpus/addon_frame/`) over real sockets: every file as
//! a first frame gets a welcome or a clean close frame with a code and a reason that fits, and
//! every file as a later frame leaves the connection up and answering pings.

use std::path::Path;

use addon_bridge::BridgeSettings;
use addon_bridge::protocol::{MAX_CLOSE_REASON, close};

use crate::support::{Addon, Frame, serve, settings, user_with_key};

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/addon_frame");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            // Frames are text: a file that is not UTF-8 cannot be sent as one.
            let text = String::from_utf8(std::fs::read(&path).unwrap()).ok()?;
            Some((path.display().to_string(), text))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{} files", files.len());
    files
}

#[tokio::test]
async fn every_corpus_frame_gets_a_clean_answer_and_the_connection_survives() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    // The smallest frame limit the settings allow, so the limit is reached by the corpus.
    let server = serve(
        &db,
        BridgeSettings {
            max_frame_bytes: 1024,
            ..settings()
        },
    )
    .await;
    let (_, _, key) = user_with_key(&db).await;

    for (name, text) in corpus() {
        let mut addon = Addon::connect_first(&server.url, &key, &text).await;
        match addon.next().await {
            Frame::Json(welcome) => assert_eq!(welcome["type"], "welcome", "{name}"),
            Frame::Close(code, reason) => {
                assert!(
                    [
                        close::PROTOCOL_ERROR,
                        close::VERSION_UNSUPPORTED,
                        close::PROTOCOL_UNSUPPORTED
                    ]
                    .contains(&code),
                    "{name}: {code} {reason}"
                );
                assert!(
                    !reason.is_empty() && reason.len() <= MAX_CLOSE_REASON,
                    "{name}"
                );
            }
            Frame::Ended => panic!("{name}: the socket ended without a close frame"),
        }
        addon.drop_connection().await;
    }

    let mut addon = Addon::connect(&server.url, &key).await;
    for (name, text) in corpus() {
        addon.send(&text).await;
        addon.send(r#"{"v":1,"type":"ping"}"#).await;
        // Replies (and acknowledgements of earlier events) until the pong of this ping.
        loop {
            match addon.next().await {
                Frame::Json(frame) if frame["type"] == "pong" => break,
                Frame::Json(frame) => {
                    assert_eq!(frame["v"], 1, "{name}: {frame}");
                    assert!(
                        ["error", "event_ack"].contains(&frame["type"].as_str().unwrap_or("")),
                        "{name}: {frame}"
                    );
                }
                other => panic!("{name}: the connection ended: {other:?}"),
            }
        }
    }
}
