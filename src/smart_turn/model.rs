//! smart-turn v3 through ONNX Runtime, loaded at run time (`ort` with
//! `load-dynamic`): nothing is linked at build time, so the default build needs
//! no system library. The runtime library (`libonnxruntime.so`, e.g. from
//! PyPI's `onnxruntime` wheel) and the model file are fetched by
//! `scripts/fetch-smart-turn.sh`.
//!
//! One [`SmartTurnModel`] per worker thread; `predict` is blocking (≈ 100 ms on
//! this machine) and must never run on a call task.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::features::{FRAMES, LogMel, MELS, RATE};
use crate::audio::resample::Resampler;

/// Errors loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configured file does not exist.
    #[error("{what} not found at {path}")]
    Missing {
        /// "model" or "ONNX Runtime library"
        what: &'static str,
        /// the path tried
        path: PathBuf,
    },
    /// The runtime library could not be loaded (or is too old).
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The model could not be loaded or run.
    #[error("smart-turn model: {0}")]
    Model(String),
    /// The caller audio's rate cannot be converted to 16 kHz.
    #[error(transparent)]
    Resample(#[from] crate::audio::resample::ResampleError),
}

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loaded from `runtime` on first use.
/// The first outcome is final: a second path is ignored.
fn environment(runtime: &Path) -> Result<&'static ort::environment::Environment, ModelError> {
    if ENV.get().is_none() && !runtime.is_file() {
        return Err(ModelError::Missing { what: "ONNX Runtime library", path: runtime.to_path_buf() });
    }
    ENV.get_or_init(|| {
        ort::init_from(runtime).map_err(|e| e.to_string())?.with_name("callbridge").build().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ModelError::Runtime(e.clone()))
}

/// One loaded model with its front end and buffers.
pub struct SmartTurnModel {
    session: Session,
    mel: LogMel,
    features: Vec<f32>,
    audio16k: Vec<i16>,
}

impl std::fmt::Debug for SmartTurnModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurnModel").finish_non_exhaustive()
    }
}

impl SmartTurnModel {
    /// Load `model` with the ONNX Runtime library at `runtime`, one intra-op thread.
    pub fn load(runtime: &Path, model: &Path) -> Result<Self, ModelError> {
        if !model.is_file() {
            return Err(ModelError::Missing { what: "model", path: model.to_path_buf() });
        }
        let env = environment(runtime)?;
        let err = |e: ort::Error| ModelError::Model(e.to_string());
        let session = Session::builder(env)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| ModelError::Model(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| ModelError::Model(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| ModelError::Model(e.to_string()))?
            .commit_from_file(model)
            .map_err(err)?;
        Ok(Self { session, mel: LogMel::new(), features: vec![0.0; MELS * FRAMES], audio16k: Vec::new() })
    }

    /// P(turn complete) for the caller's turn so far (`audio` at `rate`; the
    /// last 8 s are used).
    pub fn predict(&mut self, audio: &[i16], rate: u32) -> Result<f32, ModelError> {
        let keep = (rate as usize) * 8;
        let audio = &audio[audio.len().saturating_sub(keep)..];
        let pcm: &[i16] = if rate == RATE {
            audio
        } else {
            let mut r = Resampler::new(rate, RATE, audio.len().max(1))?;
            self.audio16k.resize(r.output_len(audio.len()), 0);
            let n = r.process(audio, &mut self.audio16k);
            self.audio16k.truncate(n);
            &self.audio16k
        };
        self.mel.compute(pcm, &mut self.features);
        self.predict_features()
    }

    /// P(turn complete) for features already in `[80][800]` layout.
    pub fn predict_features(&mut self) -> Result<f32, ModelError> {
        let err = |e: ort::Error| ModelError::Model(e.to_string());
        let input = TensorRef::from_array_view(([1usize, MELS, FRAMES], &*self.features)).map_err(err)?;
        let out = self.session.run(ort::inputs!["input_features" => input]).map_err(err)?;
        let (_, p) = out["logits"].try_extract_tensor::<f32>().map_err(err)?;
        p.first().copied().ok_or_else(|| ModelError::Model("empty output".into()))
    }

    /// Replace the features (tests against reference features).
    pub fn set_features(&mut self, f: &[f32]) {
        self.features.copy_from_slice(f);
    }

    /// The features of the last [`SmartTurnModel::predict`].
    pub fn features(&self) -> &[f32] {
        &self.features
    }
}
