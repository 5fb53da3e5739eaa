//! `$export` jobs of the HTTP API: each runs in the background of the node
//! that accepted it and lives in a directory of its own,
//! `{export dir}/{tenant}/{job id}/`, holding `job.json` (its state, written
//! atomically) and the NDJSON files. Everything about a job is found under
//! its tenant's directory, so a lookup for another tenant cannot reach it.
//! See docs/decisions.md for why files and not PostgreSQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use query::Queries;
use schemas::{ResourceType, TenantId};

use super::{ExportSpec, Written, write_ndjson};

/// A running job writes its state at least this often; an in-progress job
/// whose state is older than [`STALE_AFTER`] died with its node.
const HEARTBEAT: Duration = Duration::from_secs(2);
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Most jobs one node runs at once; more are refused until one ends.
const MAX_RUNNING: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
}

/// A job's state, as stored in its `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub tenant: TenantId,
    /// The client (token `sub`) that started the job: the only one it
    /// answers. Jobs stored before owners were recorded answer nobody.
    #[serde(default)]
    pub owner: Option<String>,
    pub status: JobStatus,
    /// The kick-off request's URL.
    pub request: String,
    /// When the export started: resources changed later may be missing.
    pub transaction_time: DateTime<Utc>,
    pub output: Vec<Written>,
    pub error: Option<String>,
    /// What a poll says while the job runs (`X-Progress`).
    pub progress: String,
    pub heartbeat: DateTime<Utc>,
}

/// Why a job cannot start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{MAX_RUNNING} exports are already running on this node; retry later")]
    Busy,
    /// The tenant runs its whole share of exports already.
    #[error("this tenant already runs {0} export(s) on this node; retry when one ends")]
    TenantBusy(usize),
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// The jobs of this node and the directory they live in.
pub struct ExportJobs {
    root: PathBuf,
    queries: Queries,
    running: Mutex<HashMap<Uuid, (TenantId, CancellationToken)>>,
    /// Jobs one tenant runs at once (0: only the node's limit).
    per_tenant: usize,
}

impl ExportJobs {
    pub fn new(root: PathBuf, queries: Queries, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self { root, queries, running: Mutex::new(HashMap::new()), per_tenant })
    }

    fn job_dir(&self, tenant: &TenantId, job: Uuid) -> PathBuf {
        self.root.join(tenant.as_str()).join(job.to_string())
    }

    /// Starts an export in the background; its id is the status URL's.
    /// `owner` is the token subject that started the job; `tenant_cap` is
    /// the tenant's own override of the per-tenant share.
    pub async fn start(
        self: &Arc<Self>,
        spec: ExportSpec,
        request: String,
        owner: String,
        tenant_cap: Option<usize>,
    ) -> Result<Uuid, JobError> {
        let cap = schemas::quota::effective_cap(self.per_tenant, tenant_cap);
        let job = Uuid::new_v4();
        let cancel = CancellationToken::new();
        {
            let mut running = self.running.lock().map_err(|_| anyhow::anyhow!("the job table is poisoned"))?;
            // The tenant's share first: a tenant at its share is told so
            // (429) even while the node is busy with others' exports.
            let own = running.values().filter(|(t, _)| *t == spec.tenant).count();
            if !crate::http::shares::may_take(own, cap) {
                return Err(JobError::TenantBusy(cap));
            }
            if running.len() >= MAX_RUNNING {
                return Err(JobError::Busy);
            }
            running.insert(job, (spec.tenant.clone(), cancel.clone()));
        }
        let dir = self.job_dir(&spec.tenant, job);
        let now = Utc::now();
        let record = JobRecord {
            tenant: spec.tenant.clone(),
            owner: Some(owner),
            status: JobStatus::InProgress,
            request,
            transaction_time: now,
            output: Vec::new(),
            error: None,
            progress: "queued".into(),
            heartbeat: now,
        };
        let started = async {
            tokio::fs::create_dir_all(&dir).await.with_context(|| format!("create {}", dir.display()))?;
            store(&dir, &record).await
        }
        .await;
        if let Err(e) = started {
            self.finish(job);
            return Err(e.into());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.run(job, spec, record, dir, cancel).await;
            this.finish(job);
        });
        Ok(job)
    }

    async fn run(&self, job: Uuid, spec: ExportSpec, mut record: JobRecord, dir: PathBuf, cancel: CancellationToken) {
        let progress = Mutex::new(String::from("starting"));
        // For the progress message only: a failed count is not a failed export.
        let total = super::count(&self.queries, &spec).await.ok();
        let result = write_ndjson(&self.queries, &spec, &dir, &cancel, |rt: ResourceType, n| {
            if let Ok(mut p) = progress.lock() {
                *p = match total {
                    Some(total) => format!("{n} of about {total} resources written; now {rt}"),
                    None => format!("{n} resources written; now {rt}"),
                };
            }
        });
        // The state is written beside the export on a timer, so the
        // progress callback stays synchronous and cheap.
        let result = {
            tokio::pin!(result);
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    r = &mut result => break r,
                    _ = tick.tick() => {
                        if cancel.is_cancelled() { continue; }
                        record.heartbeat = Utc::now();
                        record.progress = progress.lock().map(|p| p.clone()).unwrap_or_default();
                        if let Err(e) = store(&dir, &record).await {
                            tracing::warn!(%job, error = %format!("{e:#}"), "export heartbeat not written");
                        }
                    }
                }
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        record.heartbeat = Utc::now();
        match result {
            Ok(output) => {
                record.status = JobStatus::Completed;
                record.progress = "completed".into();
                record.output = output;
            }
            Err(e) => {
                tracing::error!(%job, error = %format!("{e:#}"), "export failed");
                record.status = JobStatus::Failed;
                record.error = Some(format!("{e:#}"));
            }
        }
        // No longer counted as running once a poll can see it finished: a
        // client that starts its next export on reading "completed" must
        // not find its share still taken.
        self.finish(job);
        if let Err(e) = store(&dir, &record).await {
            tracing::error!(%job, error = %format!("{e:#}"), "export state not written");
        }
    }

    fn finish(&self, job: Uuid) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job);
        }
    }

    /// A job of `tenant`, or `None` if that tenant has no such job. An
    /// in-progress job whose heartbeat stopped is reported as failed.
    pub async fn status(&self, tenant: &TenantId, job: Uuid) -> anyhow::Result<Option<JobRecord>> {
        let path = self.job_dir(tenant, job).join("job.json");
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("read {}", path.display()))),
        };
        let mut record: JobRecord =
            serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?;
        if record.tenant != *tenant {
            return Ok(None);
        }
        if record.status == JobStatus::InProgress && Utc::now() - record.heartbeat > STALE_AFTER {
            record.status = JobStatus::Failed;
            record.error = Some("the export was interrupted (its server stopped); start it again".into());
        }
        Ok(Some(record))
    }

    /// Cancels a job and removes it with its files; `false` if `tenant`
    /// has no such job.
    pub async fn delete(&self, tenant: &TenantId, job: Uuid) -> anyhow::Result<bool> {
        if self.status(tenant, job).await?.is_none() {
            return Ok(false);
        }
        let cancel = self.running.lock().ok().and_then(|r| r.get(&job).map(|(_, c)| c.clone()));
        if let Some(c) = cancel {
            c.cancel();
        }
        remove_dir(&self.job_dir(tenant, job)).await?;
        Ok(true)
    }

    /// Cancels every running job of a deleted tenant and removes all its
    /// exports, so a tenant created later under the same name finds none.
    pub async fn purge_tenant(&self, tenant: &TenantId) -> anyhow::Result<()> {
        if let Ok(running) = self.running.lock() {
            running.values().filter(|(t, _)| t == tenant).for_each(|(_, c)| c.cancel());
        }
        remove_dir(&self.root.join(tenant.as_str())).await
    }

    /// The path of a completed job's file of `rt`, if the job wrote one.
    pub async fn file(&self, tenant: &TenantId, job: Uuid, rt: ResourceType) -> anyhow::Result<Option<PathBuf>> {
        let Some(record) = self.status(tenant, job).await? else { return Ok(None) };
        let listed =
            record.status == JobStatus::Completed && record.output.iter().any(|w| w.resource_type == rt.as_str());
        Ok(listed.then(|| self.job_dir(tenant, job).join(super::file_name(rt))))
    }
}

/// Whether a job's files are past their retention: a finished job
/// `retention` after it finished, an abandoned in-progress one (its node
/// died) `retention` after its heartbeat went stale. Zero keeps everything.
pub fn expired(status: JobStatus, heartbeat: DateTime<Utc>, now: DateTime<Utc>, retention: Duration) -> bool {
    let Ok(retention) = chrono::TimeDelta::from_std(retention) else { return false };
    if retention.is_zero() {
        return false;
    }
    let age = now - heartbeat;
    match status {
        JobStatus::Completed | JobStatus::Failed => age > retention,
        JobStatus::InProgress => age > STALE_AFTER + retention,
    }
}

impl ExportJobs {
    /// Removes every job past its retention (see [`expired`]), except the
    /// ones this node runs; returns how many. Exports are files on a disk
    /// every tenant shares: without expiry they pile up for ever.
    pub async fn sweep(&self, retention: Duration) -> anyhow::Result<usize> {
        let mut removed = 0;
        let now = Utc::now();
        let Ok(mut tenants) = tokio::fs::read_dir(&self.root).await else { return Ok(0) };
        while let Some(tenant_dir) = tenants.next_entry().await? {
            let Ok(mut jobs) = tokio::fs::read_dir(tenant_dir.path()).await else { continue };
            while let Some(job_dir) = jobs.next_entry().await? {
                let running = job_dir
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
                    .is_some_and(|id| self.running.lock().is_ok_and(|r| r.contains_key(&id)));
                if running {
                    continue;
                }
                let Ok(bytes) = tokio::fs::read(job_dir.path().join("job.json")).await else { continue };
                let Ok(record) = serde_json::from_slice::<JobRecord>(&bytes) else { continue };
                if expired(record.status, record.heartbeat, now, retention) {
                    remove_dir(&job_dir.path()).await?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            metrics::counter!("fhirstream_export_jobs_expired_total").increment(removed as u64);
        }
        Ok(removed)
    }

    /// Sweeps expired jobs every quarter of `retention` (between 1 s and
    /// 10 min) until `stop`; nothing with a retention of zero.
    pub fn spawn_sweeper(self: &Arc<Self>, retention: Duration, stop: CancellationToken) {
        if retention.is_zero() {
            return;
        }
        let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = this.sweep(retention).await {
                            tracing::warn!(error = %format!("{e:#}"), "sweeping expired exports failed");
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

/// Removes a directory that a job cancelled a moment ago may still be
/// writing a file into (its last write can land mid-removal): retried.
async fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("remove {}", dir.display()))),
        }
    }
}

/// Writes `job.json` atomically (a poll never reads half of it).
async fn store(dir: &Path, record: &JobRecord) -> anyhow::Result<()> {
    let tmp = dir.join("job.json.tmp");
    let body = serde_json::to_vec(record).context("serialise the job state")?;
    tokio::fs::write(&tmp, body).await.with_context(|| format!("write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, dir.join("job.json")).await.context("replace job.json")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_jobs_expire_after_the_retention_and_abandoned_ones_after_going_stale_too() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        let ago = |s: i64| now - chrono::TimeDelta::seconds(s);
        assert!(!expired(JobStatus::Completed, ago(3_600), now, day));
        assert!(expired(JobStatus::Completed, ago(86_401), now, day));
        assert!(expired(JobStatus::Failed, ago(86_401), now, day));
        assert!(!expired(JobStatus::InProgress, ago(86_401), now, day), "stale only 30 s later");
        assert!(expired(JobStatus::InProgress, ago(86_432), now, day));
        assert!(!expired(JobStatus::Completed, ago(1_000_000), now, Duration::ZERO), "zero keeps everything");
    }
}
