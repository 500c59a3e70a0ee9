//! A composer on loopback that takes bearer tokens of `issuer` (audience
//! `kiln`), for the CLI's tests of tokens and logins.

use kiln_composer::config::AuthConfig;
use kiln_composer::{AppState, ComposerConfig};

/// The composer's URL (`http://127.0.0.1:PORT`) and its data directory,
/// which lives as long as the test holds it.
pub(crate) async fn composer_trusting(issuer: String) -> (String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = ComposerConfig {
        data_dir: data.path().to_owned(),
        auth: AuthConfig {
            issuer: Some(issuer),
            audience: Some("kiln".into()),
            ..AuthConfig::default()
        },
        ..Default::default()
    };
    config.jobs.run_in_composer = false;
    let state = AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kiln_composer::serve(
        state,
        listener,
        std::future::pending(),
    ));
    (url, data)
}
