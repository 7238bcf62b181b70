//! The `dpo` command line on Llama-family models, end to end, with the tiny
//! presets (`llama-tiny`: grouped-query heads, llama3 rope scaling, untied
//! head; `qwen2-tiny`: q/k/v biases; `qwen3-tiny`: q/k norms): SFT from a
//! fresh model, then DPO (prefix sharing and the lazy reference cache on, as
//! by default), in f32 and bf16, each resumed to the bit; KTO; eval;
//! generation; the checkpoints are Hugging Face directories.

use std::path::Path;

use crate::common::{assert_resumes_bitwise, dpo_in, golden_dir, Run};
use serde_json::Value;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn dpo(args: &[&str]) -> Run {
    dpo_in(&golden_dir(), args)
}

/// `dpo sft --config PRESET` for 2 steps into `out`.
fn sft(preset: &str, out: &Path) {
    dpo(&[
        "sft",
        "--config",
        preset,
        "--data",
        "sft/sft.jsonl",
        "--out",
        s(out),
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--lr",
        "1e-2",
        "--no-progress",
    ])
    .assert_ok();
}

#[test]
fn sft_then_dpo_resume_bitwise_for_each_family_member() {
    for preset in ["llama-tiny", "qwen2-tiny", "qwen3-tiny"] {
        let tmp = tempfile::tempdir().unwrap();
        let init = tmp.path().join("sft");
        sft(preset, &init);
        let config: Value =
            serde_json::from_slice(&std::fs::read(init.join("config.json")).unwrap()).unwrap();
        assert_eq!(
            config["model_type"],
            preset.trim_end_matches("-tiny"),
            "{preset}: a Llama-family checkpoint is a Hugging Face directory"
        );
        for precision in ["f32", "bf16"] {
            let dir = tmp.path().join(precision);
            assert_resumes_bitwise(
                &dir,
                &["model.safetensors", "optimizer.safetensors"],
                "1",
                "2",
                |out, steps, resume| {
                    let mut args = vec![
                        "train",
                        "--policy",
                        s(&init),
                        "--ref",
                        s(&init),
                        "--data",
                        "text/prefs.jsonl",
                        "--out",
                        s(out),
                        "--steps",
                        steps,
                        "--batch-size",
                        "2",
                        "--lr",
                        "1e-2",
                        "--optimizer",
                        "adamw",
                        "--precision",
                        precision,
                        "--no-progress",
                    ];
                    if resume {
                        args.push("--resume");
                    }
                    dpo(&args)
                },
            );
        }
        // eval gives finite metrics; KTO trains; generation stops within its budget
        let eval = dpo(&[
            "eval",
            "--policy",
            s(&tmp.path().join("f32/straight")),
            "--ref",
            s(&init),
            "--data",
            "text/prefs.jsonl",
        ]);
        let metrics = eval.assert_ok().json();
        assert!(
            metrics["loss"].as_f64().unwrap().is_finite(),
            "{preset}: {eval}"
        );
        let unpaired = tmp.path().join("unpaired.jsonl");
        std::fs::write(
            &unpaired,
            "{\"prompt\": \"a>\", \"completion\": \"A.\", \"label\": true}\n\
             {\"prompt\": \"b>\", \"completion\": \"b.\", \"label\": false}\n",
        )
        .unwrap();
        dpo(&[
            "train",
            "--loss",
            "kto",
            "--policy",
            s(&init),
            "--ref",
            s(&init),
            "--data",
            s(&unpaired),
            "--out",
            s(&tmp.path().join("kto")),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
        ])
        .assert_ok();
        let generated = dpo(&[
            "generate",
            "--model",
            s(&init),
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
        ]);
        assert!(generated.assert_ok().json()["new_tokens"].as_u64().unwrap() <= 5);
    }
}
