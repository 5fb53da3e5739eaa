//! Killing the projector process mid-stream loses and doubles nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::TestApp;

fn start_projector(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["serve", "--roles", "projector", "--listen", "127.0.0.1:0", "--projector-batch", "16"])
        .args(["--nats-url", &app.nats.url, "--database-url", &app.db.url, "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a projector process")
}

/// Six concurrent writers, each doing `n` PUTs and DELETEs over ten ids of
/// its own, starting at step `from`.
fn writers(app: &TestApp, t: &str, from: u32, n: u32) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|w| {
            let http = app.http.clone();
            let base = app.fhir(t, "");
            tokio::spawn(async move {
                for i in from..from + n {
                    let id = format!("w{w}-{}", i % 10);
                    let url = format!("{base}Patient/{id}");
                    let req = if i % 13 == 12 {
                        http.delete(&url)
                    } else {
                        let body =
                            json!({"resourceType": "Patient", "id": id, "birthDate": format!("19{:02}", i % 100)});
                        http.put(&url).header("content-type", "application/fhir+json").body(body.to_string())
                    };
                    let res = req.header("x-fhirstream-consistency", "eventual").send().await.expect("write");
                    assert!(res.status().is_success(), "write {id}: {}", res.status());
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn killing_the_projector_mid_stream_and_restarting_it_yields_the_fold_of_the_stream() {
    // The server itself runs no projector; a separate process does, and is
    // killed with SIGKILL while writes keep coming.
    let app = TestApp::spawn_with(|cfg| {
        cfg.roles = vec![fhirstream::config::Role::Command, fhirstream::config::Role::Query];
    })
    .await;
    let t = app.tenant("crash").await;

    // A backlog first, so the projector has work when it is killed; then
    // more writes while it is being killed and restarted.
    for w in writers(&app, &t, 0, 150) {
        w.await.expect("writer");
    }
    let more = writers(&app, &t, 150, 60);

    let mut mid_stream_kills = 0;
    for round in 0..5 {
        let (start, _) = app.projection_lag().await;
        let mut projector = start_projector(&app);
        // Kill as soon as it has committed something past where it started.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while app.projection_lag().await.0 == start && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        projector.kill().expect("SIGKILL the projector");
        projector.wait().expect("reap the projector");
        let (after, last) = app.projection_lag().await;
        eprintln!("kill {round}: checkpoint {start} -> {after} of {last}");
        if after > start && after < last {
            mid_stream_kills += 1;
        }
    }
    for w in more {
        w.await.expect("writer");
    }

    assert!(mid_stream_kills >= 3, "kills landed while events were still unapplied ({mid_stream_kills})");
    let mut projector = start_projector(&app);
    app.wait_caught_up(Duration::from_secs(60)).await;
    projector.kill().ok();
    projector.wait().ok();

    let expected = app.fold_stream(&t).await;
    assert_eq!(expected.versions.len(), 6 * 210, "every acknowledged write is one event");
    let actual = app.fold_read_model(&t).await;
    actual.assert_same_as(&expected);
}
