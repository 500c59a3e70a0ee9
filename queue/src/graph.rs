//! Planning a batch of new jobs: which state each starts in, given its
//! dependencies inside the batch and those already stored. Shared by both
//! backends so that they cannot disagree.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::{dependency_reason, JobState, NewJob, QueueError, Result};

/// A stored job that a new job depends on.
#[derive(Debug, Clone)]
pub(crate) struct StoredDependency {
    pub state: JobState,
    pub job_type: String,
    pub reason: Option<String>,
}

/// The initial state of a new job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub state: JobState,
    /// Dependencies not yet succeeded.
    pub pending: i32,
    pub reason: Option<String>,
}

/// Checks that ids are unique and that every dependency names an earlier job of
/// the batch or a job outside it (so a batch can never hold a cycle).
/// Returns the dependencies outside the batch.
pub fn validate_graph(jobs: &[NewJob]) -> Result<Vec<Uuid>> {
    let all: HashSet<Uuid> = jobs.iter().map(|j| j.id).collect();
    let mut seen = HashSet::new();
    let mut external = Vec::new();
    for job in jobs {
        if !seen.insert(job.id) {
            return Err(QueueError::DuplicateJob(job.id));
        }
        for dep in &job.dependencies {
            if *dep == job.id || (all.contains(dep) && !seen.contains(dep)) {
                // A dependency on itself or on a later job of the batch: a cycle
                // could follow, and the batch order says what runs first.
                return Err(QueueError::UnknownDependency {
                    job: job.id,
                    dependency: *dep,
                });
            }
            if !all.contains(dep) && !external.contains(dep) {
                external.push(*dep);
            }
        }
    }
    Ok(external)
}

/// The initial state of every job of a batch, in batch order.
pub(crate) fn plan(
    jobs: &[NewJob],
    stored: &HashMap<Uuid, StoredDependency>,
) -> Result<Vec<Planned>> {
    let mut planned: HashMap<Uuid, (Planned, &str)> = HashMap::new();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut pending = 0;
        let mut failed_by: Option<String> = None;
        // A dependency named twice is one dependency (stored once).
        let mut seen = HashSet::new();
        for dep in job.dependencies.iter().filter(|d| seen.insert(**d)) {
            let (state, job_type, reason) = if let Some((p, t)) = planned.get(dep) {
                (p.state, *t, p.reason.as_deref())
            } else if let Some(s) = stored.get(dep) {
                (s.state, s.job_type.as_str(), s.reason.as_deref())
            } else {
                return Err(QueueError::UnknownDependency {
                    job: job.id,
                    dependency: *dep,
                });
            };
            match state {
                JobState::Success => {}
                JobState::Failed | JobState::Canceled => {
                    if failed_by.is_none() {
                        failed_by = Some(dependency_reason(job_type, *dep, state, reason));
                    }
                }
                _ => pending += 1,
            }
        }
        let p = match failed_by {
            Some(reason) => Planned {
                state: JobState::Failed,
                pending,
                reason: Some(reason),
            },
            None if pending == 0 => Planned {
                state: JobState::Queued,
                pending: 0,
                reason: None,
            },
            None => Planned {
                state: JobState::Waiting,
                pending,
                reason: None,
            },
        };
        planned.insert(job.id, (p.clone(), job.job_type.as_str()));
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(t: &str) -> NewJob {
        NewJob::new(t, "x86_64", "default", json!({}))
    }

    #[test]
    fn chain_starts_with_one_queued_job() {
        let a = job("depsolve");
        let b = job("manifest").depends_on(&[a.id]);
        let c = job("build").depends_on(&[b.id]);
        let p = plan(&[a, b, c], &HashMap::new()).unwrap();
        assert_eq!(
            p.iter().map(|p| p.state).collect::<Vec<_>>(),
            vec![JobState::Queued, JobState::Waiting, JobState::Waiting]
        );
    }

    #[test]
    fn forward_and_self_references_are_refused() {
        let mut a = job("a");
        let b = job("b");
        a.dependencies.push(b.id);
        assert!(matches!(
            validate_graph(&[a, b]),
            Err(QueueError::UnknownDependency { .. })
        ));
        let mut c = job("c");
        c.dependencies.push(c.id);
        assert!(validate_graph(&[c]).is_err());
    }

    #[test]
    fn a_dependency_named_twice_counts_once() {
        let a = job("depsolve");
        let b = job("manifest").depends_on(&[a.id, a.id]);
        let p = plan(&[a, b], &HashMap::new()).unwrap();
        assert_eq!(p[1].pending, 1);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let a = job("a");
        assert!(matches!(
            validate_graph(&[a.clone(), a]),
            Err(QueueError::DuplicateJob(_))
        ));
    }

    #[test]
    fn failed_stored_dependency_fails_the_chain_with_its_reason() {
        let dead = Uuid::new_v4();
        let stored = HashMap::from([(
            dead,
            StoredDependency {
                state: JobState::Failed,
                job_type: "depsolve".into(),
                reason: Some("no package foo".into()),
            },
        )]);
        let b = job("manifest").depends_on(&[dead]);
        let c = job("build").depends_on(&[b.id]);
        let p = plan(&[b.clone(), c], &stored).unwrap();
        assert_eq!(p[0].state, JobState::Failed);
        assert_eq!(
            p[0].reason.as_deref(),
            Some(format!("dependency depsolve job {dead} failed: no package foo").as_str())
        );
        assert_eq!(p[1].state, JobState::Failed);
        assert!(p[1].reason.as_deref().unwrap().contains(&b.id.to_string()));
    }

    #[test]
    fn succeeded_stored_dependency_does_not_hold_the_job() {
        let done = Uuid::new_v4();
        let stored = HashMap::from([(
            done,
            StoredDependency {
                state: JobState::Success,
                job_type: "depsolve".into(),
                reason: None,
            },
        )]);
        let p = plan(&[job("manifest").depends_on(&[done])], &stored).unwrap();
        assert_eq!(p[0].state, JobState::Queued);
    }
}
