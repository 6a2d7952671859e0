//! The media hosts (SESSION.md §12.1): one `media_conn` IQ at a time, its answer kept while
//! fresh (across reconnects: it belongs to the session), handed to the driver that transfers
//! the files.

use super::MsgIq;
use crate::machine::{ConnectionMachine, Event, IqResult, SendError};
use crate::media::{self, MediaConn};
use crate::time::Instant;

impl ConnectionMachine {
    /// The media hosts and upload token. Gives them at once while the last answer is fresh
    /// (`force` asks again, e.g. after the hosts refused the token); otherwise sends the
    /// `media_conn` IQ (one at a time) and returns `None`: [`Event::MediaConn`] follows with
    /// the answer or the failure.
    pub fn media_conn(
        &mut self,
        now: Instant,
        force: bool,
    ) -> Result<Option<MediaConn>, SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let m = &mut self.session_msg;
        if !force {
            if let Some(conn) = m.media_conn.as_ref().filter(|c| c.is_fresh(now)) {
                return Ok(Some(conn.clone()));
            }
        }
        if !m.media_conn_inflight {
            let req = media::media_conn_request();
            if self.send_messaging_iq(now, req, MsgIq::MediaConn) {
                self.session_msg.media_conn_inflight = true;
            } else {
                return Err(SendError::NotConnected);
            }
        }
        Ok(None)
    }

    pub(super) fn on_media_conn(&mut self, now: Instant, result: IqResult) {
        self.session_msg.media_conn_inflight = false;
        let outcome = match result {
            IqResult::Ok(node) => media::parse_media_conn(&node, now).map_err(|e| e.to_string()),
            other => Err(format!("{other:?}")),
        };
        match outcome {
            Ok(conn) => {
                self.session_msg.media_conn = Some(conn.clone());
                self.emit(Event::MediaConn(Ok(conn)));
            }
            Err(reason) => {
                tracing::warn!(%reason, "media_conn failed");
                self.emit(Event::MediaConn(Err(reason)));
            }
        }
    }
}
