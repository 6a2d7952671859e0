//! Runs the WhatsApp-server simulator by hand:
//!
//! ```text
//! cargo run -p amarula-tests --bin simulator -- --listen 127.0.0.1:PORT [--account PHONE]...
//!     [--link-device PHONE FILE]... [--group SUBJECT PHONE,PHONE...]... [--seed HEX32]
//! ```
//!
//! Prints the URL and the trust anchor's root key (hex) that a client must trust, then serves
//! until Ctrl-C. `--link-device` links a new device to the account `PHONE` (created if needed)
//! and writes its credentials to `FILE` in the `amarula::FileStore` format, so a client can log
//! in without pairing. `--group` creates a group of the listed accounts (the first is the
//! creator) and prints its JID. What the accounts' phones decrypt is printed as it arrives.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use amarula_tests::sim::{SimConfig, SimEvent, Simulator};

const USAGE: &str = "usage: simulator [--listen ADDR:PORT] [--account PHONE]... \
                     [--link-device PHONE FILE]... [--group SUBJECT PHONE,PHONE...]... \
                     [--seed HEX32]";

/// What the command line asks for.
struct Args {
    config: SimConfig,
    accounts: Vec<String>,
    devices: Vec<(String, String)>,
    groups: Vec<(String, Vec<String>)>,
}

fn phone(v: &str, flag: &str) -> Result<String, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{flag} {v}: digits only"));
    }
    Ok(v.to_owned())
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = SimConfig::default();
    let mut accounts = Vec::new();
    let mut devices = Vec::new();
    let mut groups = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value()?;
                config.listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v}: {e}"))?,
                );
            }
            "--account" => accounts.push(phone(&value()?, "--account")?),
            "--link-device" => {
                let p = phone(&value()?, "--link-device")?;
                let file = value()?;
                devices.push((p, file));
            }
            "--group" => {
                let subject = value()?;
                let members = value()?
                    .split(',')
                    .map(|p| phone(p, "--group"))
                    .collect::<Result<Vec<_>, _>>()?;
                groups.push((subject, members));
            }
            "--seed" => {
                let v = value()?;
                let bytes = hex::decode(&v).map_err(|e| format!("--seed: {e}"))?;
                config.seed = bytes
                    .try_into()
                    .map_err(|_| "--seed: 32 bytes of hex".to_owned())?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Args {
        config,
        accounts,
        devices,
        groups,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let Args {
        config,
        accounts,
        devices,
        groups,
    } = match parse(std::env::args().skip(1)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for phone in &accounts {
        let account = sim.add_account(phone);
        println!("account {} lid {}", account.jid(), account.lid());
    }
    for (i, (phone, file)) in devices.iter().enumerate() {
        use amarula::store::{CredentialStore, FileStore};
        let account = sim.account(phone).unwrap_or_else(|| sim.add_account(phone));
        let mut creds = amarula_tests::sim::client::fresh_credentials(200u8.wrapping_add(i as u8));
        let device = account.link_device(&creds);
        println!("device {} credentials {file}", device.jid);
        creds.device = Some(device);
        if let Err(e) = FileStore::new(file).save(&creds).await {
            eprintln!("cannot write {file}: {e}");
            return ExitCode::FAILURE;
        }
    }
    for (subject, members) in &groups {
        let Some((creator, rest)) = members.split_first() else {
            continue;
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let group = sim.add_account(creator).create_group(subject, &rest);
        println!("group {group} {subject:?} members {}", members.join(","));
    }
    let mut events = sim.subscribe();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                SimEvent::PhoneMessage {
                    account,
                    from,
                    chat,
                    id,
                    message,
                } => println!("phone {account}: {id} from {from} in {chat}: {message:?}"),
                SimEvent::PhoneUndecryptable {
                    account,
                    from,
                    id,
                    error,
                } => println!("phone {account}: {id} from {from} undecryptable: {error}"),
                _ => {}
            }
        }
    });
    let anchor = sim.trust_anchor();
    println!("url {}", sim.url());
    println!("trust-root {}", hex::encode(anchor.root_public));
    println!("trust-issuer-serial {}", anchor.issuer_serial);
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C: {e}");
    }
    sim.shutdown();
    ExitCode::SUCCESS
}
