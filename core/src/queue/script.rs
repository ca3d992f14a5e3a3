//! The script boundary: one [`ScriptDef`] per Lua script, which knows its KEYS in the order its
//! header documents (a test reads the headers and compares), prepends the shared `lib.lua`, and
//! passes the queue's key prefix as ARGV[1]; and [`Reply`], the one reader of script replies,
//! whose [`Code`] is the one mapping of a script's answer codes to types.

use std::sync::OnceLock;

use redis::{Script, ScriptInvocation, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::model::TaskId;

/// The shared prelude of every script: clock, ready score, key names, backoff, overlap guard.
pub const LUA_LIB: &str = include_str!("scripts/lib.lua");

/// A queue key a script takes in KEYS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Ready,
    Delayed,
    Retry,
    Active,
    Dead,
    Dlq,
    Outbox,
    Wake,
    Seq,
    Token,
    Paused,
}

impl Key {
    /// The name the scripts' headers use for it.
    pub fn name(self) -> &'static str {
        match self {
            Key::Ready => "ready",
            Key::Delayed => "delayed",
            Key::Retry => "retry",
            Key::Active => "active",
            Key::Dead => "dead",
            Key::Dlq => "dlq",
            Key::Outbox => "outbox",
            Key::Wake => "wake",
            Key::Seq => "seq",
            Key::Token => "token",
            Key::Paused => "paused",
        }
    }

    fn of(self, k: &QueueKeys) -> &str {
        match self {
            Key::Ready => &k.ready,
            Key::Delayed => &k.delayed,
            Key::Retry => &k.retry,
            Key::Active => &k.active,
            Key::Dead => &k.dead,
            Key::Dlq => &k.dlq,
            Key::Outbox => &k.outbox,
            Key::Wake => &k.wake,
            Key::Seq => &k.seq,
            Key::Token => &k.token,
            Key::Paused => &k.paused,
        }
    }
}

/// One Lua script: its name, its KEYS in order, its source (after `lib.lua`).
pub struct ScriptDef {
    pub name: &'static str,
    pub keys: &'static [Key],
    /// The script's own file, without the prelude.
    pub body: &'static str,
    /// Scripts this one runs whole, each as the function `run_<name>(KEYS, ARGV)` (its body,
    /// unchanged, with KEYS and ARGV as parameters): one transition made of others in one call.
    pub parts: &'static [&'static ScriptDef],
    script: OnceLock<Script>,
}

impl ScriptDef {
    const fn new(name: &'static str, keys: &'static [Key], body: &'static str, parts: &'static [&'static ScriptDef]) -> Self {
        ScriptDef { name, keys, body, parts, script: OnceLock::new() }
    }

    /// The whole source: `lib.lua`, the parts as functions, then the body.
    pub fn source(&self) -> String {
        let mut src = String::from(LUA_LIB);
        for p in self.parts {
            src.push_str(&format!("local function run_{}(KEYS, ARGV)\n{}\nend\n", p.name, p.body));
        }
        src.push_str(self.body);
        src
    }

    pub fn script(&self) -> &Script {
        self.script.get_or_init(|| Script::new(&self.source()))
    }

    /// An invocation with KEYS filled in from `k` and ARGV[1] the queue's key prefix; the
    /// caller adds the rest of ARGV in the order the script's header gives.
    pub fn call(&self, k: &QueueKeys) -> ScriptInvocation<'_> {
        let mut inv = self.script().prepare_invoke();
        for key in self.keys {
            inv.key(key.of(k));
        }
        inv.arg(&k.prefix);
        inv
    }

    /// The same as an `EVALSHA` command, for pipelining (the script must be loaded first).
    pub fn cmd(&self, k: &QueueKeys) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script().get_hash()).arg(self.keys.len());
        for key in self.keys {
            cmd.arg(key.of(k));
        }
        cmd.arg(&k.prefix);
        cmd
    }
}

use Key::*;

macro_rules! script {
    ($name:ident, $file:literal, [$($key:ident),*] $(, runs [$($part:ident),*])?) => {
        pub static $name: ScriptDef =
            ScriptDef::new($file, &[$($key),*], include_str!(concat!("scripts/", $file, ".lua")), &[$($(&$part),*)?]);
    };
}
script!(ENQUEUE, "enqueue", [Ready, Delayed, Seq, Wake]);
script!(CLAIM, "claim", [Ready, Delayed, Active, Seq, Token, Outbox, Wake, Paused, Retry]);
script!(ACK, "ack", [Active, Outbox, Ready, Seq, Wake]);
script!(FAIL, "fail", [Active, Retry, Dead, Dlq, Outbox, Wake, Delayed, Ready, Seq]);
script!(HEARTBEAT, "heartbeat", [Active, Outbox]);
script!(CANCEL, "cancel", [Ready, Delayed, Dead, Dlq, Outbox, Retry, Seq, Wake]);
script!(RETRY_NOW, "retry_now", [Ready, Delayed, Dead, Dlq, Seq, Outbox, Wake, Retry]);
script!(REAP, "reap", [Active, Ready, Dead, Dlq, Seq, Token, Outbox, Wake]);
script!(DROP, "drop", [Ready, Delayed]);
script!(RELEASE, "release", [Active, Ready, Seq, Token, Outbox, Wake]);
script!(RESTORE, "restore", [Ready, Delayed, Retry, Dead, Seq, Wake]);
script!(LIMITS, "limits", [Wake]);
script!(PURGE_DEAD, "purge_dead", [Dead, Dlq]);
script!(ACK_CLAIM, "ack_claim", [Ready, Delayed, Active, Seq, Token, Outbox, Wake, Paused, Retry], runs [ACK, CLAIM]);

/// Every script, for loading them all at once and for the header test.
pub static ALL: [&ScriptDef; 14] =
    [&ENQUEUE, &CLAIM, &ACK, &FAIL, &HEARTBEAT, &CANCEL, &RETRY_NOW, &REAP, &DROP, &RELEASE, &RESTORE, &LIMITS, &PURGE_DEAD, &ACK_CLAIM];

/// Every answer code a script gives beside data, decoded here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// fail: will run again.
    Retrying,
    /// fail: no attempts left, or a permanent error.
    Dead,
    /// fail, cancel: the task is cancelled.
    Cancelled,
    /// cancel: the task is running; its handler is told.
    Cancelling,
    /// retry_now: the task is ready now.
    Queued,
    /// fail: the fencing token was stale (another worker owns the task now); nothing changed.
    Stale,
    /// cancel, retry_now: the task's state does not allow it (or it is already being cancelled).
    Refused,
    /// cancel, retry_now: the task is not live in Redis (finished, or unknown).
    NotFound,
}

impl Code {
    fn parse(script: &'static str, s: &str) -> Result<Code> {
        Ok(match s {
            "retrying" => Code::Retrying,
            "dead" => Code::Dead,
            "cancelled" => Code::Cancelled,
            "cancelling" => Code::Cancelling,
            "queued" => Code::Queued,
            "stale" => Code::Stale,
            "refused" => Code::Refused,
            "not_found" => Code::NotFound,
            other => return Err(unexpected(script, format!("unknown answer code {other:?}"))),
        })
    }
}

/// A reply this version does not understand (a script and its caller out of step).
pub fn unexpected(script: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol { script, detail: detail.into() }
}

/// A cursor over a script's reply array.
pub struct Reply {
    script: &'static str,
    it: std::vec::IntoIter<Value>,
}

impl Reply {
    pub fn new(script: &'static str, v: Vec<Value>) -> Self {
        Reply { script, it: v.into_iter() }
    }

    pub fn int(&mut self) -> Result<i64> {
        match self.it.next() {
            Some(Value::Int(i)) => Ok(i),
            Some(Value::BulkString(b)) => {
                std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| unexpected(self.script, "expected an integer"))
            }
            other => Err(unexpected(self.script, format!("expected an integer, got {other:?}"))),
        }
    }

    pub fn string(&mut self) -> Result<String> {
        match self.it.next() {
            Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| unexpected(self.script, "invalid UTF-8")),
            Some(Value::SimpleString(s)) => Ok(s),
            Some(Value::Int(i)) => Ok(i.to_string()),
            Some(Value::Nil) | None => Ok(String::new()),
            other => Err(unexpected(self.script, format!("expected a string, got {other:?}"))),
        }
    }

    pub fn id(&mut self) -> Result<TaskId> {
        let s = self.string()?;
        Uuid::parse_str(&s).map_err(|_| unexpected(self.script, format!("bad task id {s:?}")))
    }

    pub fn code(&mut self) -> Result<Code> {
        let s = self.string()?;
        Code::parse(self.script, &s)
    }

    /// Skip one element.
    pub fn skip(&mut self) {
        self.it.next();
    }

    /// The rest, as ids.
    pub fn ids(mut self) -> Result<Vec<TaskId>> {
        let mut out = Vec::with_capacity(self.it.len());
        while self.it.len() > 0 {
            out.push(self.id()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The KEYS each script's header documents (`KEYS[n] name`), in order.
    fn header_keys(body: &str) -> Vec<String> {
        let mut keys: Vec<(usize, String)> = Vec::new();
        for line in body.lines().take_while(|l| l.starts_with("--")) {
            let mut rest = line;
            while let Some(i) = rest.find("KEYS[") {
                rest = &rest[i + 5..];
                let Some(close) = rest.find(']') else { break };
                let n: usize = rest[..close].parse().unwrap();
                let name: String = rest[close + 1..].trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                keys.push((n, name));
                rest = &rest[close..];
            }
        }
        keys.sort();
        for (i, (n, _)) in keys.iter().enumerate() {
            assert_eq!(*n, i + 1, "KEYS numbered 1, 2, 3, … in the header");
        }
        keys.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn every_script_takes_its_keys_in_the_order_its_header_documents() {
        for s in ALL {
            let want: Vec<&str> = s.keys.iter().map(|k| k.name()).collect();
            assert_eq!(header_keys(s.body), want, "{}.lua", s.name);
        }
    }

    #[test]
    fn every_script_names_the_ready_score_and_key_helpers_instead_of_spelling_them_out() {
        for s in ALL {
            for spelled in ["70368744177664", "* SHIFT", "'t:'", "'p:'", "'idem:'", "'done:'", "'sg:'", "'sq:'", "'TIME'"] {
                assert!(!s.body.contains(spelled), "{}.lua spells out {spelled}; use lib.lua", s.name);
            }
        }
    }

    #[test]
    fn an_unknown_answer_code_is_a_protocol_error_naming_the_script() {
        let mut r = Reply::new("cancel", vec![Value::BulkString(b"exploded".to_vec())]);
        let e = r.code().unwrap_err();
        assert!(e.to_string().contains("cancel") && e.to_string().contains("exploded"), "{e}");
    }
}
