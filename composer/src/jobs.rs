//! The typed layer over the queue. `kiln-queue` stores every job's
//! arguments and result as opaque JSON; here they are written from and read
//! into the job contract's types (`kiln_api::jobs`), so the planner, the
//! composer's own job runner, the status code and the worker API never read
//! a job by string key. What a leased job is handed (its arguments and its
//! dependencies' results, by kind) is built in one place, [`assignment`],
//! for the runner and the worker API alike.

use kiln_api::jobs::{Depsolve, JobArgs, JobError, JobKind, JobResult, JobType, Manifest};
use kiln_api::worker::AssignedJob;
use kiln_queue::{Job, JobQueue, NewJob, Outcome, QueueError};
use uuid::Uuid;

/// Reading or writing a job through the contract failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Contract(#[from] JobError),
}

/// A new job of a compose's graph, its arguments as the queue stores them.
pub fn new_job(args: &JobArgs, arch: &str, channel: &str) -> Result<NewJob, JobError> {
    Ok(NewJob::new(
        args.kind().as_str(),
        arch,
        channel,
        args.encode()?,
    ))
}

/// The kind of a stored job.
pub fn kind(job: &Job) -> Result<JobKind, JobError> {
    JobKind::parse(&job.job_type)
}

/// Whether a stored job is of `kind`.
pub fn is(job: &Job, kind: JobKind) -> bool {
    job.job_type == kind.as_str()
}

/// The typed arguments of a stored job.
pub fn args(job: &Job) -> Result<JobArgs, JobError> {
    JobArgs::decode(kind(job)?, &job.args)
}

/// The image (in request order) a job works for; 0 for a job whose
/// arguments do not say.
pub fn image(job: &Job) -> usize {
    args(job).map(|a| a.image()).unwrap_or(0)
}

/// The typed result of a job of kind `T`: `None` when the job is of
/// another kind or has no result (yet).
pub fn result<T: JobType>(job: &Job) -> Option<Result<T::Result, JobError>> {
    if !is(job, T::KIND) {
        return None;
    }
    job.result.as_ref().map(T::decode_result)
}

/// The result of the dependency of kind `T` of `job`, if it has one that
/// finished with a result.
pub async fn dependency_result<T: JobType>(
    queue: &dyn JobQueue,
    job: &Job,
) -> Result<Option<T::Result>, JobsError> {
    for id in &job.dependencies {
        let Some(dep) = queue.job(*id).await? else {
            continue;
        };
        if let Some(r) = result::<T>(&dep) {
            return Ok(Some(r?));
        }
    }
    Ok(None)
}

/// What a leased job is handed: its arguments and its dependencies' results.
pub async fn assignment(queue: &dyn JobQueue, job: &Job) -> Result<AssignedJob, JobsError> {
    Ok(match args(job)? {
        JobArgs::Depsolve(args) => AssignedJob::Depsolve { args },
        JobArgs::Manifest(args) => AssignedJob::Manifest {
            args,
            depsolved: dependency_result::<Depsolve>(queue, job).await?,
        },
        JobArgs::Build(args) => AssignedJob::Build {
            args,
            manifest: dependency_result::<Manifest>(queue, job).await?,
        },
        JobArgs::Boot(args) => AssignedJob::Boot { args },
    })
}

/// How a job ended, as the queue stores it.
pub fn outcome(ended: Result<JobResult, String>) -> Outcome {
    match ended.and_then(|r| r.encode().map_err(|e| e.to_string())) {
        Ok(result) => Outcome::Success(result),
        Err(reason) => Outcome::Failure {
            reason,
            result: None,
        },
    }
}

/// Ends a lease that cannot be served: the job fails with `reason`.
pub async fn refuse(queue: &dyn JobQueue, token: Uuid, reason: String) -> Result<Job, QueueError> {
    queue.finish(token, outcome(Err(reason))).await
}
