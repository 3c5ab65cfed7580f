//! A chat server in the design of tokio's chat example: one task per
//! member, and an unbounded channel to each, so a line said to the room is
//! queued for every member at once and never waits for a slow one. It
//! speaks the course's chat protocol (lesson 05), enough of it for the
//! bench: the name, `* in the room:`, `[name] text` to the others, leaving.
//!
//! What it does not have, on purpose, is the bound lesson 05 keeps: a
//! member who stops reading makes its channel grow for as long as the room
//! talks. The bench shows what that costs.
//!
//!     cargo run --release --bin tokio-chat-peer -- 127.0.0.1:0
//!                                   prints `listening on ADDR`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};

type Members = Arc<Mutex<HashMap<String, UnboundedSender<Arc<str>>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio_peers::listen().await?;
    let members: Members = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let members = Arc::clone(&members);
        tokio::spawn(async move {
            let _ = serve_member(stream, members).await;
        });
    }
}

async fn serve_member(stream: TcpStream, members: Members) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    writer.write_all(b"* what is your name?\n").await?;
    let Some(name) = lines.next_line().await? else {
        return Ok(());
    };
    let (outbox, mut queued) = mpsc::unbounded_channel::<Arc<str>>();
    if !join(&members, &name, outbox) {
        writer.write_all(b"! that name is taken\n").await?;
        return Ok(());
    }
    // The member's writer: whatever is queued, in order, as it comes.
    let writing = tokio::spawn(async move {
        while let Some(line) = queued.recv().await {
            if writer.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    while let Ok(Some(text)) = lines.next_line().await {
        let line: Arc<str> = format!("[{name}] {text}\n").into();
        broadcast(&members.lock().unwrap(), &name, line);
    }
    leave(&members, &name);
    writing.abort();
    Ok(())
}

/// Let `name` in, unless taken: it hears who is here, the others hear it came.
fn join(members: &Members, name: &str, outbox: UnboundedSender<Arc<str>>) -> bool {
    let mut members = members.lock().unwrap();
    if members.contains_key(name) {
        return false;
    }
    let mut everyone: Vec<&str> = members.keys().map(String::as_str).collect();
    everyone.push(name);
    everyone.sort_unstable();
    let _ = outbox.send(format!("* in the room: {}\n", everyone.join(" ")).into());
    broadcast(&members, name, format!("* {name} joined\n").into());
    members.insert(name.to_string(), outbox);
    true
}

fn leave(members: &Members, name: &str) {
    let mut members = members.lock().unwrap();
    members.remove(name);
    broadcast(&members, name, format!("* {name} left\n").into());
}

/// Queue `line` for every member but `from`: never waits.
fn broadcast(members: &HashMap<String, UnboundedSender<Arc<str>>>, from: &str, line: Arc<str>) {
    for (name, outbox) in members {
        if name != from {
            let _ = outbox.send(Arc::clone(&line));
        }
    }
}
