"""NPR-Beta SFT: config defaults, record preparation, the collator's loss, and a real training run on the toy model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from npr_toolkit.data.io import InputError
from npr_toolkit.data.prompts import user_message
from npr_toolkit.format.tags import TAGS
from npr_toolkit.toy import build_model, build_tokenizer, save_toy_model
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory
from npr_toolkit.train import NPRSFTConfig, NPRSFTTrainer, TreeCollator, encode_messages, load_sft_config
from npr_toolkit.train.sft import REPORT_NAME, prepare_examples, run_sft
from npr_toolkit.view import build_view
from npr_toolkit.view.semantics import read_semantics

REPO = Path(__file__).resolve().parents[2]
SIZES = {"hidden_size": 64, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128}


# A short SFT run on CPU that measurably learns: a high constant learning rate, batches of 8, seeded.
QUICK_CPU_RUN = dict(
    use_cpu=True, learning_rate=3e-3, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=8,
    disable_tqdm=True, seed=0,
)  # fmt: skip


def beta_records(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    return [
        {
            "id": p["id"],
            "messages": [*user_message(p["problem"], PROMPT_TEMPLATE), {"role": "assistant", "content": text}],
            "answer": p["answer"],
        }
        for p in make_problems(n, split=split, seed=seed)
        for text in [reference_trajectory(p["problem"])]
    ]


def tree_nll(model, tokenizer, records: list[dict], mode: str = "canonical") -> float:
    """Token-mean NLL of the view's targets, one sequence at a time with its own additive mask."""
    total, count = 0.0, 0
    for record in records:
        ids, prompt_length = encode_messages(tokenizer, record["messages"])
        view = build_view(ids, tokenizer, mode=mode, prompt_length=prompt_length)
        with torch.no_grad():
            logits = model(
                input_ids=view.input_ids[None],
                attention_mask=view.additive_mask()[None],
                position_ids=view.position_ids[None],
            ).logits[0]  # (L, V)
        total += F.cross_entropy(logits.float(), view.labels, ignore_index=-100, reduction="sum").item()
        count += int((view.labels != -100).sum())
    return total / count


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_toy_model(tmp_path_factory.mktemp("toy") / "base", seed=0, **SIZES)


# --- config


def test_config_defaults_follow_npr_beta(tmp_path: Path) -> None:
    config = NPRSFTConfig(output_dir=str(tmp_path), use_cpu=True)
    assert config.learning_rate == 1e-6
    assert config.lr_scheduler_type == "cosine"
    assert config.warmup_steps == 0.05
    assert config.weight_decay == 0.1
    assert config.num_train_epochs == 1
    assert config.max_length == 32768
    assert (config.bf16, config.attn_implementation, config.activation_checkpointing) == (False, "sdpa", False)
    assert config.remove_unused_columns is False
    assert config.dataset_kwargs == {"skip_prepare_dataset": True}
    assert (config.packing, config.padding_free) == (False, False)
    assert config.report_to in ("none", [], ["none"])
    assert (config.semantics, config.recorded_semantics, config.view_mode) == ("canonical", "canonical", None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"semantics": "tree"}, "semantics"),
        ({"view_mode": "tree"}, "view_mode"),
        ({"view_mode": "npr-compat", "semantics": "reprefill"}, "disagree"),
        ({"packing": True}, "packing"),
        ({"remove_unused_columns": True}, "remove_unused_columns"),
        ({"attn_implementation": "flex_attention"}, "CUDA"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"no_such_field": 1}, "unknown config field"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_sft_config(None, output_dir=str(tmp_path), use_cpu=True, **values)


def test_yaml_config(tmp_path: Path) -> None:
    shipped = load_sft_config(REPO / "configs" / "sft.yaml", output_dir=str(tmp_path), use_cpu=True)
    assert shipped.learning_rate == 1e-6 and shipped.gradient_accumulation_steps == 16
    assert (REPO / "configs" / "sft.yaml").read_text().startswith("# npr train sft ")
    path = tmp_path / "c.yaml"
    assert (shipped.semantics, shipped.recorded_semantics) == ("canonical", "canonical")
    path.write_text("learning_rate: 1e-5\nmax_steps: 3\nsemantics: reprefill\n")  # YAML 1.1 reads 1e-5 as text
    config = load_sft_config(path, output_dir=str(tmp_path), use_cpu=True, max_steps=5)
    assert (config.learning_rate, config.max_steps, config.semantics) == (1e-5, 5, "reprefill")
    assert config.recorded_semantics == "reprefill"
    path.write_text("view_mode: npr-compat\n")  # a config written before `semantics` existed
    config = load_sft_config(path, output_dir=str(tmp_path), use_cpu=True)
    assert (config.semantics, config.recorded_semantics, config.view_mode) == ("npr-compat", "canonical", None)
    assert dataclasses.replace(config, max_steps=2).semantics == "npr-compat"
    path.write_text("- a list\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_sft_config(path, output_dir=str(tmp_path))
    with pytest.raises(InputError, match="no such config file"):
        load_sft_config(tmp_path / "missing.yaml", output_dir=str(tmp_path))


# --- records


def test_encode_messages_is_prompt_then_completion() -> None:
    tok = build_tokenizer()
    record = beta_records(1)[0]
    ids, prompt_length = encode_messages(tok, record["messages"])
    prompt = tok.apply_chat_template(record["messages"][:1], tokenize=False, add_generation_prompt=True)
    assert tok.decode(ids[:prompt_length]) == prompt
    assert tok.decode(ids[prompt_length:]) == record["messages"][1]["content"] + tok.eos_token
    assert ids[-1] == tok.eos_token_id


def test_encode_messages_with_the_qwen_tokenizer(qwen_tokenizer) -> None:
    records = beta_records(4, seed=5)
    examples, dropped, _ = prepare_examples(
        [(str(i), r, None) for i, r in enumerate(records)], qwen_tokenizer, max_length=None, mode="canonical"
    )
    assert not dropped
    for example, record in zip(examples, records, strict=True):
        completion = qwen_tokenizer.decode(example["input_ids"][example["prompt_length"] :])
        assert completion == record["messages"][-1]["content"] + qwen_tokenizer.eos_token
        view = build_view(example["input_ids"], qwen_tokenizer, prompt_length=example["prompt_length"])
        assert view.widths == [record["messages"][0]["content"].count("(")]  # one branch per sub-sum


def test_prepare_examples_counts_every_dropped_record() -> None:
    tok = build_tokenizer()
    good = beta_records(3)
    long_one = beta_records(1, seed=9)[0]
    long_one["messages"][0]["content"] += " " * 400
    malformed = {
        **good[0],
        "id": "m",
        "messages": [good[0]["messages"][0], {"role": "assistant", "content": "x</step>"}],
    }
    no_completion = {**good[0], "id": "u", "messages": good[0]["messages"][:1]}
    rows = [("f:1", good[0], None), ("f:2", None, "invalid JSON"), ("f:3", {"id": 1}, None), ("f:4", long_one, None)]
    rows += [("f:5", malformed, None), ("f:6", no_completion, None), ("f:7", good[1], None), ("f:8", good[2], None)]
    examples, dropped, count = prepare_examples(rows, tok, max_length=300, mode="canonical")
    assert count == 8
    assert [e["id"] for e in examples] == [good[0]["id"], good[1]["id"], good[2]["id"]]
    assert [(d.where, d.kind) for d in dropped] == [
        ("f:2", "invalid"),
        ("f:3", "invalid"),
        ("f:4", "too_long"),
        ("f:5", "malformed"),
        ("f:6", "invalid"),
    ]
    assert "messages" in dropped[1].reason and "> max_length 300" in dropped[2].reason


# --- the loss


@pytest.mark.parametrize(
    ("attn", "attention", "mode"),
    [("sdpa", "bool", "canonical"), ("eager", "additive", "npr-compat"), ("sdpa", "bool", "reprefill")],
)
def test_collator_loss_is_token_mean_tree_nll(tmp_path: Path, attn: str, attention: str, mode: str) -> None:
    tok = build_tokenizer()
    model = build_model(tok, seed=1, attn_implementation=attn, **SIZES)
    records = beta_records(5, seed=2)
    examples, dropped, _ = prepare_examples(
        [(str(i), r, None) for i, r in enumerate(records)], tok, max_length=None, mode=mode
    )
    assert not dropped
    config = NPRSFTConfig(output_dir=str(tmp_path), use_cpu=True, semantics=mode, attn_implementation=attn)
    collator = TreeCollator(tok, mode=mode, attention=attention)
    trainer = NPRSFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tok,
        data_collator=collator,
    )
    batch = collator(examples)
    assert batch["attention_mask"].dtype == (torch.bool if attention == "bool" else torch.float32)
    targets = int((batch["shift_labels"] != -100).sum())
    assert targets == int((batch["labels"] != -100).sum())

    total, count, read = 0.0, 0, 0
    for example in examples:
        view = build_view(example["input_ids"], tok, mode=mode, prompt_length=example["prompt_length"])
        read += len(view)  # what the model reads: the packed sequence under reprefill
        with torch.no_grad():
            logits = model(
                input_ids=view.input_ids[None],
                attention_mask=view.additive_mask()[None],
                position_ids=view.position_ids[None],
            ).logits[0]
        total += F.cross_entropy(logits, view.labels, ignore_index=-100, reduction="sum").item()
        count += int((view.labels != -100).sum())
    assert count == targets

    model.train()  # the trainer's mode; Qwen3 has no dropout, so logits are unchanged
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        global_mean = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(targets))
    assert abs(loss.item() - total / count) < 1e-5
    assert abs(global_mean.item() - total / count) < 1e-5
    assert trainer._metrics["train"]["num_tokens"] == [read * 2]
    assert (read > sum(len(e["input_ids"]) for e in examples)) == (mode == "reprefill")


# --- the stage


def test_sft_lowers_loss_and_saves_a_loadable_checkpoint(toy_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "beta.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in beta_records(64)) + "{broken\n")
    heldout = beta_records(8, split="heldout")
    base_nll = tree_nll(AutoModelForCausalLM.from_pretrained(toy_dir), AutoTokenizer.from_pretrained(toy_dir), heldout)

    out = run_sft(
        toy_dir,
        data,
        tmp_path / "sft",
        max_steps=16,
        logging_steps=4,
        save_strategy="no",
        **QUICK_CPU_RUN,
    )
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["records"], report["trained"], report["dropped"]) == (65, 64, {"invalid": 1})
    assert report["dropped_records"][0]["where"].endswith("beta.jsonl:65")
    assert report["steps"] == 16
    assert report["last_loss"] < 0.75 * report["first_loss"]

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert read_semantics(model.config) == ("canonical", True) and report["semantics"] == "canonical"
    assert all(len(tokenizer.encode(tag, add_special_tokens=False)) == 1 for tag in TAGS)
    assert tokenizer.chat_template is not None and tokenizer.eos_token == "<|im_end|>"
    assert tree_nll(model, tokenizer, heldout) < 0.8 * base_nll


def test_reprefill_sft_learns_and_every_checkpoint_records_it(toy_dir: Path, tmp_path: Path) -> None:
    """Training on the trie-packed view lowers the loss of the requests a stock server runs, and the
    checkpoints (the final one and the intermediate ones the Trainer writes) say ``reprefill``."""
    records = beta_records(32)
    heldout = beta_records(8, split="heldout")
    base = AutoModelForCausalLM.from_pretrained(toy_dir)
    tokenizer = AutoTokenizer.from_pretrained(toy_dir)
    base_nll = tree_nll(base, tokenizer, heldout, mode="reprefill")
    assert read_semantics(base.config) == ("canonical", False)

    out = run_sft(
        toy_dir,
        records,
        tmp_path / "sft",
        semantics="reprefill",
        max_steps=8,
        save_steps=4,
        **QUICK_CPU_RUN,
    )
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["semantics"], report["view_mode"], report["trained"]) == ("reprefill", "reprefill", 32)
    for folder in (out, out / "checkpoint-4", out / "checkpoint-8"):
        assert json.loads((folder / "config.json").read_text())["npr_semantics"] == "reprefill", folder
    model = AutoModelForCausalLM.from_pretrained(out)
    assert read_semantics(model.config) == ("reprefill", True)
    assert tree_nll(model, tokenizer, heldout, mode="reprefill") < 0.8 * base_nll


def test_no_usable_record_is_an_input_error(toy_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "beta.jsonl"
    data.write_text('{"id": "a"}\n')
    with pytest.raises(InputError, match="no usable record"):
        run_sft(toy_dir, data, tmp_path / "sft", use_cpu=True)
    with pytest.raises(InputError, match="no such file"):
        run_sft(toy_dir, tmp_path / "missing.jsonl", tmp_path / "sft", use_cpu=True)
    with pytest.raises(InputError, match="cannot load model: no such directory"):
        run_sft(tmp_path / "no-model", beta_records(2), tmp_path / "sft", use_cpu=True)
