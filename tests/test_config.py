"""Typed configs: unknown keys and ill-typed values are errors that name them."""
from dataclasses import dataclass, field

import pytest
import yaml

from mmrec.config import from_dict, load_yaml
from mmrec.train import TrainConfig


@dataclass
class Inner:
    size: int = 3
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer:
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)
    label: str | None = None


def test_nested_conversion_and_unknown_keys(tmp_path):
    cfg = from_dict(Outer, {"rate": "1e-3", "inner": {"size": 5, "names": ["x", "y"]}})
    assert cfg.rate == 1e-3 and cfg.inner == Inner(5, ("x", "y"))
    with pytest.raises(ValueError, match=r"Outer.inner: unknown key\(s\) \['sise'\]"):
        from_dict(Outer, {"inner": {"sise": 5}})
    with pytest.raises(ValueError, match="expected an integer"):
        from_dict(Inner, {"size": 2.5})
    with pytest.raises(ValueError, match="not one of"):
        from_dict(TrainConfig, {"mixed_precision": "fp8"})
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.01\nbatchsize: 4\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown key\(s\) \['batchsize'\]"):
        load_yaml(TrainConfig, path)
    with pytest.raises(FileNotFoundError):
        load_yaml(TrainConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("model, key, value", [
    ("lightgcn", "n_layers", -1),  # divided by n_layers + 1 = 0: trained on infinities and exited 0
    ("lightgcn", "dim", 0), ("bpr", "reg_weight", -1e-3), ("itemknn", "k", 0), ("vae_fusion", "n_layers", -1),
    ("vae_fusion", "knn_k", 0), ("vae_fusion", "beta", float("nan")), ("clcrec", "temperature", 0.0),
    ("clcrec", "lam", 1.5), ("dropoutnet", "dropout", 1.0), ("vbpr", "content_factors", 0),
    ("affinity_pop", "neighbours", 0), ("affinity", "power", -2.0), ("random", "dim", True)])
def test_model_configs_refuse_sizes_and_weights_out_of_range(model, key, value):
    import mmrec.fusion  # noqa: F401  (registers the models)
    from mmrec.recommender import create_model

    with pytest.raises(ValueError, match=rf"Config\.{key}\b"):
        create_model(model, 5, 7, {key: value})


def test_a_yaml_alias_bomb_is_refused_and_long_values_are_cut_in_messages(tmp_path):
    """Nested aliases expanded a 1 KB run file into gigabytes (an internal MemoryError, and a multi-MB message)."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                      for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    with pytest.raises(yaml.YAMLError, match="aliases"):
        load_yaml(TrainConfig, bomb)
    long = tmp_path / "long.yaml"
    long.write_text("epochs: [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(ValueError, match=r"epochs: expected int, got \[1, 1, .*\.\.\.$") as err:
        load_yaml(TrainConfig, long)
    assert len(str(err.value)) < 200
