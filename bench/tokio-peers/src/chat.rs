//! A chat server built as tokio's chat example is (`examples/chat.rs` in
//! tokio's repository): one task per member, reading its lines and writing
//! what others said, one or the other at a time (`select!`); lines framed
//! by `LinesCodec`; an unbounded channel to each member, so a line said to
//! the room is queued for every member at once (a `String` each) and never
//! waits for a slow one; the members behind tokio's own `Mutex`. It speaks
//! the course's chat protocol (lesson 05), enough of it for the bench: the
//! name, `* in the room:`, `[name] text` to the others, leaving.
//!
//! What it does not have, on purpose, is the bound lesson 05 keeps: a
//! member who stops reading makes its channel grow for as long as the room
//! talks. The bench shows what that costs.
//!
//!     cargo run --release --bin tokio-chat-peer -- 127.0.0.1:0
//!                                   prints `listening on ADDR`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio_util::codec::{Framed, LinesCodec};

/// The sending half of a member's channel.
type Tx = mpsc::UnboundedSender<String>;

/// Who is in the room, by connection, with their names.
#[derive(Default)]
struct Shared {
    members: HashMap<SocketAddr, (String, Tx)>,
}

impl Shared {
    /// Queue `line` for every member but `sender`: never waits.
    fn broadcast(&mut self, sender: SocketAddr, line: &str) {
        for (addr, (_, tx)) in &self.members {
            if *addr != sender {
                let _ = tx.send(line.into());
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio_peers::listen().await?;
    let state = Arc::new(Mutex::new(Shared::default()));
    loop {
        let (stream, addr) = listener.accept().await?;
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = serve_member(state, stream, addr).await;
        });
    }
}

async fn serve_member(
    state: Arc<Mutex<Shared>>,
    stream: TcpStream,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let mut lines = Framed::new(stream, LinesCodec::new());
    lines.send("* what is your name?").await?;
    let Some(Ok(name)) = lines.next().await else {
        return Ok(());
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut state = state.lock().await;
        if state.members.values().any(|(taken, _)| *taken == name) {
            lines.send("! that name is taken").await?;
            return Ok(());
        }
        let mut everyone: Vec<&str> = state.members.values().map(|(n, _)| n.as_str()).collect();
        everyone.push(&name);
        everyone.sort_unstable();
        let _ = tx.send(format!("* in the room: {}", everyone.join(" ")));
        state.broadcast(addr, &format!("* {name} joined"));
        state.members.insert(addr, (name.clone(), tx));
    }
    loop {
        tokio::select! {
            // A line someone said: to this member's socket.
            Some(line) = rx.recv() => {
                lines.send(&line).await?;
            }
            // A line this member said: to everyone else's channel.
            said = lines.next() => match said {
                Some(Ok(text)) => {
                    let mut state = state.lock().await;
                    state.broadcast(addr, &format!("[{name}] {text}"));
                }
                Some(Err(_)) | None => break,
            },
        }
    }
    let mut state = state.lock().await;
    state.members.remove(&addr);
    state.broadcast(addr, &format!("* {name} left"));
    Ok(())
}
