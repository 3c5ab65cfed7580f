//! An app on the device: it registers its name with the agent, then prints
//! every notification the agent hands it. It never talks to the service:
//! the agent's one connection serves every app.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::frame::{read_frame, write_frame, FrameError};
use crate::protocol::{self, Message};

pub fn run(name: &str, agent: &str) -> Result<()> {
    protocol::name(name).map_err(anyhow::Error::msg)?;
    let mut stream = TcpStream::connect(agent).map_err(|error| {
        anyhow!("nothing is listening at {agent} ({error}): is the agent running?")
    })?;
    let register = Message::Register {
        app: name.to_string(),
        last: 0,
    };
    write_frame(&mut stream, &register.encode())?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    match read_message(&mut stream, agent)? {
        Message::Ok { .. } => println!("registered as {name} with the agent at {agent}"),
        Message::Err { reason } => bail!("the agent refused {name}: {reason}"),
        other => bail!("the agent answered {:?}, not OK", other.encode()),
    }
    io::stdout().flush()?;
    // The agent is on this device: waiting for it as long as it takes is
    // what an app does.
    stream.set_read_timeout(None)?;
    loop {
        if let Message::Push { app, id, text } = read_message(&mut stream, agent)? {
            println!("[{app} #{id}] {text}");
            io::stdout().flush()?;
        }
    }
}

fn read_message(stream: &mut TcpStream, agent: &str) -> Result<Message> {
    match read_frame(stream) {
        Ok(body) => Message::parse(&body).map_err(anyhow::Error::msg),
        Err(FrameError::Closed) => bail!("the agent at {agent} closed the connection"),
        Err(error) => bail!("the agent at {agent}: {error}"),
    }
}
