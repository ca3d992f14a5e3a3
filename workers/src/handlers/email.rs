//! The `email` handler: one SMTP submission per attempt.
//!
//! # Contract
//! - Payload (unknown fields are refused, so a typo fails loudly instead of being ignored):
//!   `{to: address | [address], subject, text?, html?, from?, reply_to?}`. Addresses may carry
//!   a display name (`"Ann <ann@example.com>"`). At least one of `text` / `html` is required;
//!   with both the message is `multipart/alternative`. `from` defaults to the handler's sender.
//! - A payload that cannot become a message (bad address, no body, no recipient) is permanent.
//! - SMTP 4xx replies, connection failures and timeouts are retryable; 5xx replies (a rejected
//!   recipient, a refused message) are permanent, since the server has said it will not accept
//!   this message.
//! - The `Message-ID` is derived from the task id, so every attempt sends the same id and
//!   receivers that deduplicate on it show a message once even when an attempt is retried after
//!   the server accepted it but before the worker heard back.
//! - Cancellation ends the attempt at once with [`HandlerError::Cancelled`]; a message the
//!   server already accepted stays sent.

use chronos_core::builtin::{EmailPayload, Recipients};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::handler::{Handler, HandlerError, Task, TaskContext};

/// Holds the transport and default sender, both checked once at start-up so a bad setting
/// stops the worker instead of failing every email.
pub struct EmailHandler {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailHandler {
    /// `smtp_url` is `smtp://host:port` (plain), `smtp://host:port?tls=required` or
    /// `?tls=opportunistic` (STARTTLS) or `smtps://host:port` (implicit TLS), with optional
    /// `user:password@`. `from` is the default sender. Both are checked here so a misconfigured
    /// worker fails at start-up rather than dead-lettering every email.
    pub fn new(smtp_url: &str, from: String) -> Result<Self, String> {
        // The URL itself is left out of the message: it may hold the SMTP password.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| {
                format!(
                    "CHRONOS_SMTP_URL is not a usable SMTP URL (smtp://host:port, \
                     smtp://host:port?tls=required, smtps://host:port): {e}"
                )
            })?
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| format!("invalid default sender address {from:?}: {e}"))?;
        Ok(EmailHandler { transport, from })
    }

    fn build(&self, ctx: &TaskContext, p: EmailPayload) -> Result<(Message, String), HandlerError> {
        let to = match p.to {
            Recipients::One(a) => vec![a],
            Recipients::Many(list) => list,
        };
        if to.is_empty() {
            return Err(HandlerError::permanent_msg("email: no recipients"));
        }
        let from = match &p.from {
            Some(a) => mailbox("from", a)?,
            None => self.from.clone(),
        };

        // The sender's domain keeps the id globally unique without asking the host its name.
        let message_id = format!("<{}@{}>", ctx.id, from.email.domain());
        let mut builder = Message::builder().from(from).subject(p.subject).message_id(Some(message_id));
        for a in &to {
            builder = builder.to(mailbox("to", a)?);
        }
        if let Some(a) = &p.reply_to {
            builder = builder.reply_to(mailbox("reply_to", a)?);
        }

        let message = match (p.text, p.html) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
            (None, None) => {
                return Err(HandlerError::permanent_msg("email: the payload needs text or html (or both)"));
            }
        }
        .map_err(|e| HandlerError::permanent_msg(format!("email: cannot build the message: {e}")))?;
        Ok((message, to.join(", ")))
    }
}

impl Handler for EmailHandler {
    fn kind(&self) -> &'static str {
        "email"
    }

    async fn handle(&self, ctx: TaskContext, task: Task) -> Result<(), HandlerError> {
        let payload: EmailPayload = task.payload()?;
        let (message, to) = self.build(&ctx, payload)?;
        tokio::select! {
            r = self.transport.send(message) => r.map(drop).map_err(|e| smtp_error(&to, e)),
            _ = ctx.cancelled() => Err(HandlerError::Cancelled),
        }
    }
}

fn mailbox(field: &str, address: &str) -> Result<Mailbox, HandlerError> {
    address.parse().map_err(|e| HandlerError::permanent_msg(format!("email: invalid {field} address {address:?}: {e}")))
}

/// Only a 5xx reply is permanent. Everything else — 4xx, refused or dropped connections,
/// timeouts, TLS and protocol trouble — is about the relay or the network, not this message,
/// and may clear up by the next attempt.
fn smtp_error(to: &str, err: lettre::transport::smtp::Error) -> HandlerError {
    let message = format!("email: sending to {to} failed: {err}");
    let mut detail = String::new();
    let mut cur = std::error::Error::source(&err);
    while let Some(e) = cur {
        detail.push_str("caused by: ");
        detail.push_str(&e.to_string());
        detail.push('\n');
        cur = e.source();
    }
    if err.is_permanent() { HandlerError::Permanent { message, detail } } else { HandlerError::Retryable { message, detail } }
}
