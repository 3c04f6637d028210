//! Jobs as the Add-On runs them: a start call carrying a server-chosen `job_id` is accepted at
//! once, the work runs in the background reporting `job_progress` about once a second of its
//! length, and ends with one `job_result`; `CancelJob` stops it with `cancelled`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Sim, lock};

/// The tools the Add-On runs as jobs.
pub(crate) const JOB_TOOLS: [&str; 3] = [
    "RunStrategyBacktest",
    "CompileNinjaScript",
    "DeployStrategy",
];
const STEPS: u32 = 5;

/// Accepts a job and starts it; the answer to the starting call.
pub(crate) fn start(sim: &Arc<Mutex<Sim>>, tool: &str, job_id: &str, args: &Value) -> Value {
    let cancel = Arc::new(AtomicBool::new(false));
    let length = {
        let mut state = lock(sim);
        state.jobs.insert(job_id.to_owned(), Arc::clone(&cancel));
        match tool {
            "RunStrategyBacktest" => state.backtest_wait(),
            "CompileNinjaScript" => Duration::from_millis(500),
            _ => Duration::from_millis(250),
        }
    };
    let (sim, tool, job_id, args) = (
        Arc::clone(sim),
        tool.to_owned(),
        job_id.to_owned(),
        args.clone(),
    );
    let answer = json!({"job_id": job_id, "state": "running"});
    tokio::spawn(async move { run(&sim, &tool, &job_id, &args, length, &cancel).await });
    answer
}

/// `CancelJob`: known jobs stop with `cancelled`; an unknown one (NinjaTrader restarted) is
/// refused so the server does not wait for a result that will never come.
pub(crate) fn cancel(sim: &Mutex<Sim>, job_id: &str) -> Result<Value, String> {
    match lock(sim).jobs.get(job_id) {
        Some(flag) => {
            flag.store(true, Ordering::SeqCst);
            Ok(json!({"job_id": job_id, "state": "cancelling"}))
        }
        None => Err(format!("no running job {job_id}")),
    }
}

async fn run(
    sim: &Mutex<Sim>,
    tool: &str,
    job_id: &str,
    args: &Value,
    length: Duration,
    cancel: &AtomicBool,
) {
    let step = length / STEPS;
    for n in 1..STEPS {
        tokio::time::sleep(step).await;
        if cancel.load(Ordering::SeqCst) {
            finish(sim, job_id, json!({"job_id": job_id, "state": "cancelled"}));
            return;
        }
        let progress = f64::from(n) / f64::from(STEPS);
        let message = match tool {
            "RunStrategyBacktest" => format!(
                "Backtesting {} ({:.0}%)",
                args["instrument"].as_str().unwrap_or("?"),
                progress * 100.0
            ),
            "CompileNinjaScript" => format!("Compiling ({:.0}%)", progress * 100.0),
            _ => format!("Enabling strategy ({:.0}%)", progress * 100.0),
        };
        emit(
            sim,
            job_id,
            "job_progress",
            json!({"job_id": job_id, "progress": progress, "message": message}),
        );
    }
    tokio::time::sleep(step).await;
    if cancel.load(Ordering::SeqCst) {
        finish(sim, job_id, json!({"job_id": job_id, "state": "cancelled"}));
        return;
    }
    let mut request = args.clone();
    if let Some(object) = request.as_object_mut() {
        object.remove("job_id");
    }
    let result = {
        let mut state = lock(sim);
        if tool == "CompileNinjaScript" {
            Ok(state.compile_report())
        } else {
            state.answer(tool, &request).0
        }
    };
    let data = match result {
        Ok(result) => json!({"job_id": job_id, "state": "completed", "result": result}),
        Err(error) => json!({"job_id": job_id, "state": "failed", "error": error}),
    };
    finish(sim, job_id, data);
}

fn finish(sim: &Mutex<Sim>, job_id: &str, data: Value) {
    lock(sim).jobs.remove(job_id);
    emit(sim, job_id, "job_result", data);
}

fn emit(sim: &Mutex<Sim>, job_id: &str, kind: &str, data: Value) {
    let mut state = lock(sim);
    let id = state.next_id(&format!("ev-{job_id}-"));
    let mut event = json!({"v": 1, "type": "event", "id": id, "kind": kind});
    event["data"] = data;
    // Kept until acknowledged: a job that ends while the socket is down is reported after the
    // next welcome.
    let frames = state.post(&[event]);
    if let Some(events) = &state.events {
        for frame in frames {
            let _ = events.send(frame);
        }
    }
}
