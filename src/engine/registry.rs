//! Engines by name: each engine registers one [`EngineFactory`] at start-up,
//! and a call's engine is built from the name its plan (or the config) gives.
//!
//! The registry knows no engine: adding one is a factory in the engine's own
//! module plus one `register` line where the server is assembled. A choice
//! that cannot be honoured (unknown name, missing key) falls back to the
//! fallback engine with a warning, so a call is always answered.

use super::Engine;
use crate::carrier::AudioFormat;
use crate::contract::CallPlan;

/// What an engine is built for.
#[derive(Debug, Clone, Copy)]
pub struct EngineRequest<'a> {
    /// The backend's plan for the call (instructions, voice, tools, …).
    pub plan: &'a CallPlan,
    /// The stream's native audio format (passthrough is chosen from it).
    pub stream: AudioFormat,
    /// Whether the engine greets the caller (not when a call resumes after a
    /// failed transfer).
    pub greet: bool,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A key or setting the engine needs is missing.
    #[error("{engine} is not configured: {why}")]
    NotConfigured {
        /// engine name
        engine: &'static str,
        /// what is missing
        why: String,
    },
    /// The request cannot be served (e.g. an audio format the engine cannot take).
    #[error("{engine} cannot serve this call: {why}")]
    Unsupported {
        /// engine name
        engine: &'static str,
        /// why
        why: String,
    },
}

/// Builds one kind of engine for a call.
pub trait EngineFactory: Send + Sync {
    /// The name plans and config use (`local`, `openai_realtime`, …).
    fn name(&self) -> &'static str;

    /// Whether the engine is usable at all (keys present).
    fn available(&self) -> Result<(), BuildError> {
        Ok(())
    }

    /// An engine for one call.
    fn build(&self, req: &EngineRequest<'_>) -> Result<Box<dyn Engine>, BuildError>;
}

/// The engine chosen for a call, and why it is not the one asked for.
#[derive(Debug)]
pub struct Chosen {
    /// The engine.
    pub engine: Box<dyn Engine>,
    /// Set when the request could not be honoured.
    pub fallback_reason: Option<String>,
}

/// Every engine this server can run.
pub struct EngineRegistry {
    factories: Vec<Box<dyn EngineFactory>>,
    default: String,
    fallback: String,
}

impl std::fmt::Debug for EngineRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRegistry").field("engines", &self.names()).field("default", &self.default).finish()
    }
}

impl EngineRegistry {
    /// An empty registry; calls without a choice get `default`, calls whose
    /// choice fails get `fallback` (which must always build).
    pub fn new(default: &str, fallback: &str) -> Self {
        Self { factories: Vec::new(), default: default.into(), fallback: fallback.into() }
    }

    /// Add an engine.
    pub fn register(&mut self, factory: impl EngineFactory + 'static) {
        self.factories.retain(|f| f.name() != factory.name());
        self.factories.push(Box::new(factory));
    }

    /// Registered names.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.iter().map(|f| f.name()).collect()
    }

    fn get(&self, name: &str) -> Option<&dyn EngineFactory> {
        self.factories.iter().find(|f| f.name() == name).map(|f| f.as_ref())
    }

    /// Check that the default engine can be built (at start-up).
    pub fn check_default(&self) -> Result<(), BuildError> {
        match self.get(&self.default) {
            Some(f) => f.available(),
            None => Err(BuildError::NotConfigured { engine: "engine", why: format!("no engine {:?}", self.default) }),
        }
    }

    /// The engine named `choice` (or the default): an unknown name gets the
    /// default, an engine that cannot be built gets the fallback.
    pub fn build(&self, choice: Option<&str>, req: &EngineRequest<'_>) -> Chosen {
        let mut why = None;
        let factory = match choice.map(|c| (c, self.get(c))) {
            Some((_, Some(f))) => f,
            Some((c, None)) => {
                why = Some(format!("unknown engine {:?}", c.chars().take(40).collect::<String>()));
                self.get(&self.default).unwrap_or_else(|| self.fallback_factory())
            }
            None => self.get(&self.default).unwrap_or_else(|| self.fallback_factory()),
        };
        match factory.build(req) {
            Ok(engine) => Chosen { engine, fallback_reason: why },
            Err(e) => {
                let engine = self.fallback_factory().build(req).expect("the fallback engine always builds");
                Chosen { engine, fallback_reason: Some(e.to_string()) }
            }
        }
    }

    fn fallback_factory(&self) -> &dyn EngineFactory {
        self.get(&self.fallback).expect("the fallback engine is registered")
    }
}
