//! An echo server in the design of tokio's echo example: a task per
//! connection, each reading into a buffer of 1 KiB and writing back what it
//! read, until the client closes. Lesson 01's solution reads far more at a
//! time (`BUFFER_BYTES` in its server.rs); the bench shows what that is worth.
//!
//!     cargo run --release --bin tokio-echo-peer -- 127.0.0.1:0
//!                                   prints `listening on ADDR`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio_peers::listen().await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = echo(stream).await;
        });
    }
}

/// Send back every byte, in the example's 1 KiB steps, until end of stream.
async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buffer = vec![0; 1024];
    loop {
        let count = stream.read(&mut buffer).await?;
        if count == 0 {
            return Ok(());
        }
        stream.write_all(&buffer[..count]).await?;
    }
}
