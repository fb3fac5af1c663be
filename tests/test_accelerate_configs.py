"""configs/accelerate/: every file loads as accelerate reads it, says what it is for, and the README's
"More than one GPU" section uses each one.

Running them is another test's (issue #14 part 2: 2-process runs on CPU); here: what a typo would break.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp2.yaml": DistributedType.FSDP,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}


@pytest.mark.parametrize(("name", "kind"), EXPECTED.items())
def test_accelerate_reads_each_config(name: str, kind: DistributedType) -> None:
    path = CONFIGS / name
    config = load_config_from_file(str(path))
    assert config.distributed_type == kind and config.num_machines == 1
    assert config.mixed_precision == "no"  # precision is the stage config's, never two sources
    header = path.read_text().splitlines()[0]
    assert header.startswith(f"# accelerate launch --config_file configs/accelerate/{name} ")


def test_fsdp2_wraps_the_qwen3_decoder_layer() -> None:
    fsdp = load_config_from_file(str(CONFIGS / "fsdp2.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert hasattr(transformers.models.qwen3.modeling_qwen3, fsdp["fsdp_transformer_layer_cls_to_wrap"])


def test_zero3_takes_its_values_from_the_stage_config() -> None:
    deepspeed = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config
    settings = json.loads((ROOT / deepspeed["deepspeed_config_file"]).read_text())
    assert settings["zero_optimization"]["stage"] == 3
    for key in ("gradient_accumulation_steps", "gradient_clipping", "train_micro_batch_size_per_gpu"):
        assert settings[key] == "auto"


def test_readme_section_uses_every_config() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## More than one GPU", 1)[1].split("\n## ", 1)[0]
    for name in EXPECTED:
        assert f"configs/accelerate/{name}" in section
    assert "--machine_rank" in section and "--main_process_ip" in section  # several nodes
