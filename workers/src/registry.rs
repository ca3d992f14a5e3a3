//! Which handler runs which task name. Two handlers for one kind is a start-up error.

use std::collections::HashMap;

use crate::handler::{DynHandler, Handler};

#[derive(Debug, thiserror::Error)]
#[error("a handler for task kind {0:?} is already registered")]
pub struct DuplicateKind(pub &'static str);

#[derive(Default)]
pub struct Registry {
    handlers: HashMap<&'static str, &'static dyn DynHandler>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register a handler. Handlers live as long as the process (they are leaked once at
    /// start-up), so each task spawns without reference counting.
    pub fn register<H: Handler>(&mut self, handler: H) -> Result<&mut Self, DuplicateKind> {
        let kind = handler.kind();
        if self.handlers.contains_key(kind) {
            return Err(DuplicateKind(kind));
        }
        let h: &'static H = Box::leak(Box::new(handler));
        self.handlers.insert(kind, h);
        Ok(self)
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&'static dyn DynHandler> {
        self.handlers.get(kind).copied()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k: Vec<_> = self.handlers.keys().copied().collect();
        k.sort_unstable();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{Noop, Sleep};

    #[test]
    fn a_second_handler_for_the_same_kind_is_refused() {
        let mut r = Registry::new();
        r.register(Noop).unwrap();
        r.register(Sleep).unwrap();
        let err = r.register(Noop).err().expect("duplicate refused");
        assert_eq!(err.0, "noop");
        assert_eq!(r.kinds(), vec!["noop", "sleep"]);
    }
}
