//! WhatsApp ids ("JIDs") in their textual form.
//!
//! A JID is `user[_agent][:device]@server`. The wire forms (JID_PAIR, AD_JID, FB_JID,
//! INTEROP_JID) live in the binary codec; this module owns the value and its text syntax.
//!
//! | text | meaning |
//! |---|---|
//! | `15551234567@s.whatsapp.net` | a phone-number user |
//! | `15551234567:3@s.whatsapp.net` | device 3 of that user (device 0 is the phone) |
//! | `15551234567_1:3@s.whatsapp.net` | with agent 1 (`user.1:3@…` is accepted too) |
//! | `123456789012345@lid` | a hidden-id ("LID") user |
//! | `120363041234567890@g.us`, `15551234567-1600000000@g.us` | groups (new and legacy ids) |
//! | `status@broadcast` | the status broadcast list |
//! | `12345@newsletter`, `…@call`, `…@bot`, `…@hosted`, `…@hosted.lid`, `…@c.us` | other servers |
//! | `7-15551234567:2@interop` | interop user with integrator 7 and device 2 |
//! | `100000000000001:2@msgr` | a Messenger user and device |
//! | `@s.whatsapp.net` (or plain `s.whatsapp.net`) | a server-only JID |
//!
//! An explicit `:0` device is kept apart from "no device": the reference encoder writes
//! `user:0@…` as an AD_JID and `user@…` as a JID_PAIR, so the difference is visible on the wire.
//! [`Jid::device`] reads both as device 0.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;

/// The server part of a JID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Server {
    /// `s.whatsapp.net`: phone-number users and the server itself.
    User,
    /// `c.us`: the legacy user server, still used by a few fixed ids.
    LegacyUser,
    /// `g.us`: groups.
    Group,
    /// `broadcast`: `status@broadcast` and broadcast lists.
    Broadcast,
    /// `lid`: hidden user ids.
    Lid,
    /// `newsletter`: channels.
    Newsletter,
    /// `call`: call ids.
    Call,
    /// `hosted`: hosted (business API) users.
    Hosted,
    /// `hosted.lid`: hosted users by LID.
    HostedLid,
    /// `interop`: users of interoperating services.
    Interop,
    /// `bot`: bots.
    Bot,
    /// `msgr`: Messenger users.
    Messenger,
    /// Any other server name, kept verbatim.
    Other(Box<str>),
}

impl Server {
    /// The server's name as written after the `@`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::User => "s.whatsapp.net",
            Self::LegacyUser => "c.us",
            Self::Group => "g.us",
            Self::Broadcast => "broadcast",
            Self::Lid => "lid",
            Self::Newsletter => "newsletter",
            Self::Call => "call",
            Self::Hosted => "hosted",
            Self::HostedLid => "hosted.lid",
            Self::Interop => "interop",
            Self::Bot => "bot",
            Self::Messenger => "msgr",
            Self::Other(s) => s,
        }
    }

    /// The known server with this name, or `None`.
    pub fn known(name: &str) -> Option<Self> {
        Some(match name {
            "s.whatsapp.net" => Self::User,
            "c.us" => Self::LegacyUser,
            "g.us" => Self::Group,
            "broadcast" => Self::Broadcast,
            "lid" => Self::Lid,
            "newsletter" => Self::Newsletter,
            "call" => Self::Call,
            "hosted" => Self::Hosted,
            "hosted.lid" => Self::HostedLid,
            "interop" => Self::Interop,
            "bot" => Self::Bot,
            "msgr" => Self::Messenger,
            _ => return None,
        })
    }

    /// The server with this name: a known one, or [`Server::Other`].
    pub fn from_name(name: &str) -> Self {
        Self::known(name).unwrap_or_else(|| Self::Other(name.into()))
    }

    /// Whether users of this server may carry an agent (`user_agent`) in text form.
    fn has_agents(&self) -> bool {
        matches!(
            self,
            Self::User | Self::Lid | Self::Hosted | Self::HostedLid | Self::LegacyUser
        )
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WhatsApp id: user, agent, device and server (and, on `interop`, the integrator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    user: CompactString,
    server: Server,
    agent: u8,
    device: Option<u16>,
    integrator: u16,
}

/// Why a string is not a JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JidParseError {
    /// No `@` and not the name of a known server.
    #[error("not a JID: no '@' and not a known server")]
    MissingAt,
    /// Nothing after the `@`.
    #[error("empty server")]
    EmptyServer,
    /// The device after `:` is not a number from 0 to 65535.
    #[error("invalid device number")]
    InvalidDevice,
    /// The agent after `_` or `.` is not a number from 0 to 255.
    #[error("invalid agent number")]
    InvalidAgent,
    /// An interop integrator that is not a number from 0 to 65535.
    #[error("invalid interop integrator")]
    InvalidIntegrator,
}

impl Jid {
    /// A JID `user@server` with no agent and no device.
    pub fn new(user: impl Into<CompactString>, server: Server) -> Self {
        Self {
            user: user.into(),
            server,
            agent: 0,
            device: None,
            integrator: 0,
        }
    }

    /// A phone-number user: `user@s.whatsapp.net`.
    pub fn user(user: impl Into<CompactString>) -> Self {
        Self::new(user, Server::User)
    }

    /// A group: `id@g.us`.
    pub fn group(id: impl Into<CompactString>) -> Self {
        Self::new(id, Server::Group)
    }

    /// A LID user: `id@lid`.
    pub fn lid(id: impl Into<CompactString>) -> Self {
        Self::new(id, Server::Lid)
    }

    /// The server-only JID `@s.whatsapp.net`, the `to` of server IQs.
    pub fn server() -> Self {
        Self::new("", Server::User)
    }

    /// The server-only JID of any server.
    pub fn server_only(server: Server) -> Self {
        Self::new("", server)
    }

    /// The status broadcast list `status@broadcast`.
    pub fn status_broadcast() -> Self {
        Self::new("status", Server::Broadcast)
    }

    /// This JID with an explicit device (`:device`); device 0 is the primary phone.
    #[must_use]
    pub fn with_device(mut self, device: u16) -> Self {
        self.device = Some(device);
        self
    }

    /// This JID with an agent (`_agent`).
    #[must_use]
    pub fn with_agent(mut self, agent: u8) -> Self {
        self.agent = agent;
        self
    }

    /// This JID with an interop integrator.
    #[must_use]
    pub fn with_integrator(mut self, integrator: u16) -> Self {
        self.integrator = integrator;
        self
    }

    /// This JID without device and agent: the user (or group, …) it belongs to.
    #[must_use]
    pub fn to_non_device(&self) -> Self {
        Self::new(self.user.clone(), self.server.clone()).with_integrator(self.integrator)
    }

    /// The user part (may be empty for a server-only JID).
    pub fn user_part(&self) -> &str {
        &self.user
    }

    /// The server.
    pub fn server_part(&self) -> &Server {
        &self.server
    }

    /// The agent, 0 when absent.
    pub fn agent(&self) -> u8 {
        self.agent
    }

    /// The device, 0 (the primary phone) when absent.
    pub fn device(&self) -> u16 {
        self.device.unwrap_or(0)
    }

    /// The device exactly as given: `None` when the JID has no `:device` part.
    pub fn explicit_device(&self) -> Option<u16> {
        self.device
    }

    /// The interop integrator, 0 when absent.
    pub fn integrator(&self) -> u16 {
        self.integrator
    }

    /// Whether this is a server-only JID (empty user).
    pub fn is_server_only(&self) -> bool {
        self.user.is_empty()
    }

    /// Whether this JID is on a LID server (`lid` or `hosted.lid`).
    pub fn is_lid(&self) -> bool {
        matches!(self.server, Server::Lid | Server::HostedLid)
    }

    /// Whether this JID names a group.
    pub fn is_group(&self) -> bool {
        self.server == Server::Group
    }

    /// Two JIDs name the same device: equal apart from `:0` versus no device.
    pub fn same_device(&self, other: &Self) -> bool {
        self.user == other.user
            && self.server == other.server
            && self.agent == other.agent
            && self.device() == other.device()
            && self.integrator == other.integrator
    }

    /// Builds a JID from parts read off the wire.
    pub(crate) fn from_parts(
        user: CompactString,
        server: Server,
        agent: u8,
        device: Option<u16>,
        integrator: u16,
    ) -> Self {
        Self {
            user,
            server,
            agent,
            device,
            integrator,
        }
    }
}

impl FromStr for Jid {
    type Err = JidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((left, server)) = s.rsplit_once('@') else {
            // A bare server name is a server-only JID (`s.whatsapp.net`); anything else without
            // an `@` is not a JID.
            return Server::known(s)
                .map(Self::server_only)
                .ok_or(JidParseError::MissingAt);
        };
        if server.is_empty() {
            return Err(JidParseError::EmptyServer);
        }
        let server = Server::from_name(server);
        let (mut user, device) = match left.rsplit_once(':') {
            Some((u, d)) => (
                u,
                Some(parse_num::<u16>(d).ok_or(JidParseError::InvalidDevice)?),
            ),
            None => (left, None),
        };
        let mut agent = 0;
        let mut integrator = 0;
        if server.has_agents() {
            // `user_agent` (text form of one reference) or `user.agent` (the other's).
            if let Some((u, a)) = user.rsplit_once(['_', '.']) {
                agent = parse_num::<u8>(a).ok_or(JidParseError::InvalidAgent)?;
                user = u;
            }
        } else if server == Server::Interop {
            // `integrator-user`; a user without a numeric prefix has no integrator.
            if let Some((i, u)) = user.split_once('-') {
                integrator = parse_num::<u16>(i).ok_or(JidParseError::InvalidIntegrator)?;
                user = u;
            }
        }
        Ok(Self {
            user: user.into(),
            server,
            agent,
            device,
            integrator,
        })
    }
}

/// Parses a plain decimal number (no sign, no spaces, not empty).
fn parse_num<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.server == Server::Interop && self.integrator != 0 {
            write!(f, "{}-", self.integrator)?;
        }
        f.write_str(&self.user)?;
        if self.agent != 0 {
            write!(f, "_{}", self.agent)?;
        }
        if let Some(d) = self.device {
            write!(f, ":{d}")?;
        }
        write!(f, "@{}", self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn round(s: &str) -> Jid {
        let j: Jid = s.parse().unwrap();
        assert_eq!(j.to_string(), s);
        j
    }

    #[test]
    fn textual_forms() {
        let j = round("15551234567@s.whatsapp.net");
        assert_eq!(
            (j.user_part(), j.server_part()),
            ("15551234567", &Server::User)
        );
        let j = round("15551234567:3@s.whatsapp.net");
        assert_eq!(j.device(), 3);
        let j = round("15551234567:0@s.whatsapp.net");
        assert_eq!(j.explicit_device(), Some(0));
        let j = round("15551234567_1:2@s.whatsapp.net");
        assert_eq!((j.agent(), j.device()), (1, 2));
        assert_eq!(j, "15551234567.1:2@s.whatsapp.net".parse().unwrap());
        assert!(round("123456789012345:7@lid").server_part() == &Server::Lid);
        assert!(round("120363041234567890@g.us").is_group());
        assert_eq!(
            round("15551234567-1600000000@g.us").user_part(),
            "15551234567-1600000000"
        );
        round("status@broadcast");
        round("12345@newsletter");
        round("abc@call");
        round("1555:1@hosted");
        round("1555:1@hosted.lid");
        round("867051314767696@bot");
        round("0@c.us");
        let j = round("7-15551234567:2@interop");
        assert_eq!(
            (j.integrator(), j.user_part(), j.device()),
            (7, "15551234567", 2)
        );
        round("100000000000001:2@msgr");
        round("user@example.org");
        let j = round("@s.whatsapp.net");
        assert!(j.is_server_only());
        assert_eq!("s.whatsapp.net".parse::<Jid>().unwrap(), j);
    }

    #[test]
    fn bad_text() {
        assert_eq!("hello".parse::<Jid>(), Err(JidParseError::MissingAt));
        assert_eq!("a@".parse::<Jid>(), Err(JidParseError::EmptyServer));
        assert_eq!(
            "a:x@s.whatsapp.net".parse::<Jid>(),
            Err(JidParseError::InvalidDevice)
        );
        assert_eq!(
            "a:70000@lid".parse::<Jid>(),
            Err(JidParseError::InvalidDevice)
        );
        assert_eq!("a_300@lid".parse::<Jid>(), Err(JidParseError::InvalidAgent));
        assert_eq!(
            "x-1@interop".parse::<Jid>(),
            Err(JidParseError::InvalidIntegrator)
        );
    }

    #[test]
    fn same_device_ignores_explicit_zero() {
        let a: Jid = "1:0@s.whatsapp.net".parse().unwrap();
        let b: Jid = "1@s.whatsapp.net".parse().unwrap();
        assert_ne!(a, b);
        assert!(a.same_device(&b));
    }
}
