//! What the tokio peers share: they listen where the bench says, and say
//! where, as every program of the course does.

use tokio::net::TcpListener;

/// Listen on the address given as the first argument (a free loopback port
/// without one), and print `listening on ADDR` for the bench to read.
pub async fn listen() -> std::io::Result<TcpListener> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}
