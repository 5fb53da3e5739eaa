//! V1: what validating one resource costs, in process: the write path's
//! `check_resource` (structure, then R4 conformance) over every Synthea
//! resource, parsed beforehand so JSON parsing (paid with or without
//! validation) is not counted. Set beside P2's time per resource, it says
//! what share of a write validation takes.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use schemas::ResourceType;
use schemas::validate::{Expect, check_resource};

use super::import::Bundle;

#[derive(Debug, Clone, Serialize)]
pub struct ValidationResult {
    pub resources: usize,
    /// Refused resources (0: the corpus is valid R4).
    pub refused: usize,
    /// Mean µs per resource over the whole corpus (the 119-bundle average).
    pub mean_us: f64,
    pub patient_us: Option<f64>,
    pub observation_us: Option<f64>,
}

/// Validates every resource `passes` times and averages the timings.
pub fn run(bundles: &[Bundle], passes: usize) -> anyhow::Result<ValidationResult> {
    let mut resources: Vec<(ResourceType, Value)> = Vec::new();
    for b in bundles {
        let bundle: Value = serde_json::from_slice(&b.body)?;
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            if let Some(rt) = r["resourceType"].as_str().and_then(|t| ResourceType::parse(t).ok()) {
                resources.push((rt, r.clone()));
            }
        }
    }
    let (mut total, mut patient, mut observation) = (Sum::default(), Sum::default(), Sum::default());
    let mut refused = 0;
    for pass in 0..=passes {
        for (rt, r) in &resources {
            let body = r.clone();
            let started = Instant::now();
            let ok = check_resource(body, Expect::Create(*rt)).is_ok();
            let us = started.elapsed().as_secs_f64() * 1e6;
            if pass == 0 {
                // The warm-up pass builds the model and warms caches.
                refused += usize::from(!ok);
                continue;
            }
            total.add(us);
            match rt.as_str() {
                "Patient" => patient.add(us),
                "Observation" => observation.add(us),
                _ => {}
            }
        }
    }
    Ok(ValidationResult {
        resources: resources.len(),
        refused,
        mean_us: total.mean().unwrap_or(0.0),
        patient_us: patient.mean(),
        observation_us: observation.mean(),
    })
}

#[derive(Default)]
struct Sum {
    us: f64,
    n: u64,
}

impl Sum {
    fn add(&mut self, us: f64) {
        self.us += us;
        self.n += 1;
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.us / self.n as f64)
    }
}
