//! The TLS clients that take rustls's process-wide crypto provider work once
//! the server has installed it: an engine's `wss://` link reaches the TLS
//! handshake and fails with an error (here: a peer that is not TLS) instead
//! of panicking because two providers are linked in and none was chosen.

use std::time::Duration;

#[tokio::test]
async fn a_wss_link_fails_with_an_error_not_a_panic() {
    callbridge::server::install_tls_provider();
    // A peer that accepts and answers garbage: the handshake must fail cleanly.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = l.accept().await.unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 not tls\r\n\r\n").await;
    });
    let connect =
        tokio::spawn(async move { tokio_tungstenite::connect_async(format!("wss://{addr}/v1/realtime")).await });
    let r = tokio::time::timeout(Duration::from_secs(10), connect).await.expect("bounded");
    let r = r.expect("the connect task did not panic");
    assert!(r.is_err(), "a peer that is not TLS is an error");
    peer.abort();
}
