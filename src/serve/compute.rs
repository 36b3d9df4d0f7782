//! The compute thread: gathers queued jobs into batches for up to `max_wait` or `max_batch`
//! texts, skips those whose client hung up, runs them on the shared backbone (one mixed pass,
//! or one pass per task) and answers each job through its own channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::config::{Batching, ServeConfig};
use super::metrics::Metrics;
use super::mixed::MixedTasks;
use crate::adapter::{Prediction, Task};
use crate::error::Result;
use crate::tokenizer::BertTokenizer;

/// One classify request waiting for the compute thread.
pub(super) struct Job {
    pub(super) task: usize,
    pub(super) texts: Vec<String>,
    /// When the request joined the queue.
    pub(super) enqueued: Instant,
    pub(super) reply: oneshot::Sender<std::result::Result<Vec<Prediction>, String>>,
}

/// The compute thread: gathers jobs into batches and runs them on the backbone.
pub(super) fn compute_loop<B: crate::model::kernels::Kernels>(
    jobs: mpsc::Receiver<Job>,
    // each with its name, for the metrics' labels
    named_tasks: Vec<(String, Task<B>)>,
    tokenizer: Arc<BertTokenizer>,
    config: ServeConfig,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    device: B::Device,
) {
    let (names, tasks): (Vec<String>, Vec<Task<B>>) = named_tasks.into_iter().unzip();
    let tasks = MixedTasks::new(tasks, &device);
    // label lookups once, not per batch
    let inference: Vec<prometheus::Histogram> = names
        .iter()
        .map(|n| metrics.inference.with_label_values(&[n.as_str()]))
        .collect();
    let classified: Vec<prometheus::IntCounter> = names
        .iter()
        .map(|n| metrics.texts.with_label_values(&[n.as_str()]))
        .collect();
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + config.max_wait;
        let mut n = first.texts.len();
        let mut batch = vec![first];
        while n < config.max_batch {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match jobs.recv_timeout(deadline - now) {
                Ok(job) => {
                    n += job.texts.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        queued.fetch_sub(
            batch.iter().map(|j| j.texts.len()).sum::<usize>(),
            Ordering::SeqCst,
        );
        // a client that hung up is not waiting for its answer: do not compute it
        batch.retain(|j| !j.reply.is_closed());
        let started = Instant::now();
        for j in &batch {
            metrics
                .queue_wait
                .observe(started.duration_since(j.enqueued).as_secs_f64());
        }
        if !batch.is_empty() {
            metrics
                .batch_texts
                .observe(batch.iter().map(|j| j.texts.len()).sum::<usize>() as f64);
        }
        if config.batching == Batching::Mixed && !batch.is_empty() {
            let items: Vec<(usize, &str)> = batch
                .iter()
                .flat_map(|j| j.texts.iter().map(move |s| (j.task, s.as_str())))
                .collect();
            let t0 = Instant::now();
            let result = tasks.classify(&tokenizer, &items, config.forward_batch, &device);
            // one pass serves every task in it: each task present is charged the pass's time
            let mut present = vec![0u64; names.len()];
            for &(t, _) in &items {
                present[t] += 1;
            }
            for (t, &n) in present.iter().enumerate().filter(|(_, n)| **n > 0) {
                inference[t].observe(t0.elapsed().as_secs_f64());
                if result.is_ok() {
                    classified[t].inc_by(n);
                }
            }
            answer(batch, result);
            continue;
        }
        for (t, task) in tasks.tasks().iter().enumerate() {
            let group: Vec<Job> = {
                let (mine, rest): (Vec<Job>, Vec<Job>) =
                    batch.into_iter().partition(|j| j.task == t);
                batch = rest;
                mine
            };
            if group.is_empty() {
                continue;
            }
            let texts: Vec<(&str, Option<&str>)> = group
                .iter()
                .flat_map(|j| j.texts.iter().map(|s| (s.as_str(), None)))
                .collect();
            let t0 = Instant::now();
            let result = task.classify(&tokenizer, &texts, config.forward_batch, &device);
            inference[t].observe(t0.elapsed().as_secs_f64());
            if result.is_ok() {
                classified[t].inc_by(texts.len() as u64);
            }
            answer(group, result);
        }
    }
}

/// Hands each job its share of the predictions (in job order), or the error.
fn answer(jobs: Vec<Job>, result: Result<Vec<Prediction>>) {
    match result {
        Ok(preds) => {
            let mut it = preds.into_iter();
            for job in jobs {
                let mine: Vec<Prediction> = it.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}
