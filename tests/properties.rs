//! Property tests of bad input: valid run files, data files and checkpoints mutated at random
//! must give an `Err` with a message, or work — never a panic. Case counts are bounded for CI.

use std::path::{Path, PathBuf};

use kiln::Device;
use kiln::data::csv::{self, CsvOptions};
use kiln::run::{Run, RunConfig, checkpoint};
use proptest::prelude::*;

const CASES: u32 = 256;

const DATA: &str = "x0,x1,y\n0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,2\n0.7,0.4,1\n0.2,0.8,0\n0.9,0.6,2\n";

/// Run files that work as they are: one per family of settings.
const RUNS: [&str; 3] = [
    r#"[model]
layers = [{ dense = 4 }, "tanh", { dense = 3 }]
loss = "cross_entropy"
[data]
path = "d.csv"
validation = 0.34
normalize = "standard"
[optimizer]
kind = "adamw"
lr = 0.01
weight_decay = 0.1
decay_biases = false
[schedule]
kind = "warmup"
steps = 2
then = { kind = "cosine_annealing", t_max = 10 }
[train]
steps = 4
batch_size = 2
clip_grad_norm = 1.0
"#,
    r#"[model]
layers = [{ dense = 3 }, { leaky_relu = 0.1 }, { dense = 3 }]
loss = "cross_entropy"
[data]
path = "d.csv"
validation = 0.34
shuffle = false
[optimizer]
kind = "rmsprop"
centered = true
momentum = 0.5
[schedule]
interval = "epoch"
kind = "reduce_on_plateau"
monitor = "val_accuracy"
mode = "max"
patience = 0
[train]
epochs = 2
batch_size = 3
early_stopping = { monitor = "val_loss", patience = 1, restore_best = true }
"#,
    r#"[model]
layers = [{ dense = 3 }]
loss = "cross_entropy"
[data]
path = "d.csv"
header = true
label_column = -1
[optimizer]
lr = 0.1
momentum = 0.9
nesterov = true
[schedule]
kind = "sequential"
milestones = [2]
schedules = [{ kind = "fixed" }, { kind = "step", step_size = 1, gamma = 0.5 }]
[train]
steps = 3
batch_size = 4
eval_every = 2
"#,
];

/// Values that break things in different ways.
const VALUES: [&str; 18] = [
    "-1",
    "0",
    "1",
    "0.5",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "true",
    "9223372036854775807",
    "-9223372036854775808",
    "[1, 2]",
    "{ kind = \"fixed\" }",
    "\"epoch\"",
];

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d.csv"), DATA).unwrap();
    dir
}

/// Replaces the value of line `line` (if it has one) with `value`, or drops the line.
fn mutate(text: &str, line: usize, value: &str, drop: bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = line % lines.len();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            if i != at {
                return Some(l.to_string());
            }
            if drop {
                return None;
            }
            Some(match l.split_once('=') {
                Some((key, _)) => format!("{key}= {value}"),
                None => l.to_string(),
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds and runs what a run file describes, a few updates at most; any result but a panic.
fn try_run(dir: &Path, text: &str) {
    let Ok(config) = RunConfig::from_toml(text, "run.toml") else {
        return;
    };
    let Ok(mut run) = Run::new(config, dir, &Device::Cpu, None, Some(4)) else {
        return;
    };
    while !run.finished() {
        if run.step().is_err() {
            return;
        }
    }
    let _ = run.evaluate();
    let _ = run.finish();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// A run file with one value replaced, or one line dropped or two replaced.
    #[test]
    fn mutated_run_files_never_panic(
        run in 0..RUNS.len(),
        edits in prop::collection::vec((0usize..40, 0..VALUES.len(), any::<bool>()), 1..3),
    ) {
        let dir = scratch();
        let mut text = RUNS[run].to_string();
        for (line, value, drop) in edits {
            text = mutate(&text, line, VALUES[value], drop && line % 3 == 0);
        }
        try_run(&dir, &text);
    }

    /// CSV text with bytes changed, inserted or removed anywhere.
    #[test]
    fn mutated_csv_never_panics(
        edits in prop::collection::vec((0usize..200, any::<u8>(), 0u8..3), 1..6),
        header in prop::sample::select(vec!["auto", "true", "false"]),
    ) {
        let mut bytes = DATA.as_bytes().to_vec();
        for (at, byte, how) in edits {
            let at = at % (bytes.len() + 1);
            match how {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => bytes[at] = byte,
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let options = CsvOptions {
            header: match header {
                "true" => csv::Header::Yes,
                "false" => csv::Header::No,
                _ => csv::Header::Auto,
            },
            ..CsvOptions::default()
        };
        if let Ok(d) = csv::parse("d.csv", &text, &options) {
            for loss in kiln::Loss::ALL {
                let _ = d.targets_for(loss, 3);
            }
            let _ = d.split(0.34, 1);
        }
    }

    /// IDX and safetensors data with bytes changed: refused or read, never a panic. The
    /// mutations start from valid files, so they reach the parsers' later checks too.
    #[test]
    fn mutated_binary_data_never_panics(
        edits in prop::collection::vec((0usize..64, any::<u8>()), 1..4),
        cut in 0usize..80,
    ) {
        let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        idx.extend(0u8..8);
        let x: Vec<u8> = [0.5f32, 1.0, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y: Vec<u8> = [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let st = safetensors::serialize(
            [
                ("x", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &x).unwrap()),
                ("y", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &y).unwrap()),
            ],
            None,
        ).unwrap();
        for mut bytes in [idx, st] {
            for &(at, byte) in &edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = kiln::data::mnist::parse_idx("i", &bytes, 0x803);
            if let Ok(d) = kiln::data::safetensors::parse("s", &bytes) {
                let _ = d.targets_for(kiln::Loss::CrossEntropy, 2);
            }
        }
    }

    /// A checkpoint whose JSON state has one value replaced anywhere in its tree, resumed and
    /// run: refused or continued, never a panic.
    #[test]
    fn mutated_checkpoints_never_panic(
        run in 0..RUNS.len(),
        pick in any::<u32>(),
        value in 0..VALUES.len(),
    ) {
        let dir = scratch().join(format!("ck-{run}-{pick}-{value}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("d.csv"), DATA).unwrap();
        let config = RunConfig::from_toml(RUNS[run], "run.toml").unwrap();
        let mut r = Run::new(config, &dir, &Device::Cpu, None, Some(2)).unwrap();
        while !r.finished() {
            r.step().unwrap();
        }
        let ck = dir.join("ck");
        r.checkpoint(&ck).unwrap();
        drop(r);
        let path = checkpoint::path(&ck);
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta: serde_json::Value =
            serde_json::from_str(&header.metadata().as_ref().unwrap()["kiln.checkpoint"]).unwrap();
        let replacement: serde_json::Value = match toml::from_str::<toml::Table>(&format!("v = {}", VALUES[value])) {
            Ok(t) => serde_json::to_value(&t["v"]).unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        };
        replace_nth(&mut meta, pick as usize, replacement);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<_> = st.tensors().into_iter().collect();
        let out = safetensors::serialize(
            tensors,
            Some([("kiln.checkpoint".to_string(), meta.to_string())].into()),
        ).unwrap();
        std::fs::write(&path, out).unwrap();
        let config = RunConfig::from_toml(RUNS[run], "run.toml").unwrap();
        if let Ok(mut r) = Run::resume(config, &dir, &Device::Cpu, &ck, Some(4)) {
            while !r.finished() {
                if r.step().is_err() {
                    break;
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Replaces the `n`-th node (mod the node count, depth first) of a JSON tree.
fn replace_nth(v: &mut serde_json::Value, n: usize, with: serde_json::Value) {
    fn count(v: &serde_json::Value) -> usize {
        1 + match v {
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            serde_json::Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut serde_json::Value, n: &mut usize, with: &serde_json::Value) -> bool {
        if *n == 0 {
            *v = with.clone();
            return true;
        }
        *n -= 1;
        match v {
            serde_json::Value::Array(a) => a.iter_mut().any(|c| walk(c, n, with)),
            serde_json::Value::Object(o) => o.values_mut().any(|c| walk(c, n, with)),
            _ => false,
        }
    }
    let total = count(v);
    let mut n = n % total;
    walk(v, &mut n, &with);
}
