"""Tiny random-init towers of every family built locally: shapes, dtype, normalisation, batching
invariance, preprocessing taken from the weights' config, weights really loaded, safe loading."""
from __future__ import annotations

import json
import os

import numpy as np
import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from mmrec.config import from_dict
from mmrec.encoders import EncoderSourceError, Preprocess, create_encoder

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def random_images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((40, 50), (64, 32), (32, 32))]


def assert_batching_invariant(batched: torch.Tensor, singles: list[torch.Tensor]) -> None:
    torch.testing.assert_close(batched, torch.cat(singles), atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "mmrec-test-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


# ------------------------------------------------------------------------------------------ open_clip

def test_openclip_image_tower(clip_config):
    enc = create_encoder(f"openclip:{clip_config}@random")
    assert (enc.modality, enc.dim, enc.normalized) == ("image", 16, True)
    assert enc.preprocess.size == (32, 32) and enc.preprocess.mean == pytest.approx(OPENAI_MEAN)
    images = random_images()
    out = enc.encode_images(images)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert_batching_invariant(out, [enc.encode_images([im]) for im in images])


def test_openclip_text_tower(clip_config):
    enc = create_encoder(f"openclip:{clip_config}@random", "text")
    texts = ["a red dress", "blue denim jacket with long sleeves", "socks"]
    out = enc.encode(texts)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert_batching_invariant(out, [enc.encode([t]) for t in texts])


def test_random_towers_are_seeded(clip_config):
    images = random_images()
    a = create_encoder(f"openclip:{clip_config}@random", seed=3).encode_images(images)
    b = create_encoder(f"openclip:{clip_config}@random", seed=3).encode_images(images)
    c = create_encoder(f"openclip:{clip_config}@random", seed=4).encode_images(images)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_openclip_loads_checkpoint_file_and_export_folder_with_its_preprocessing(clip_config, tmp_path):
    open_clip.add_model_config(clip_config)
    name = "mmrec-test-tiny-clip"
    torch.manual_seed(11)
    model = open_clip.create_model(name).eval()
    file = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(pixels, normalize=True)

    from_file = create_encoder(f"openclip:{clip_config}@{file}")
    torch.testing.assert_close(from_file.encode(pixels), expected)
    assert from_file.preprocess.mean == pytest.approx(OPENAI_MEAN)  # no config beside the file: defaults

    folder = tmp_path / "export"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
                      "resize_mode": "squash"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": preprocess_cfg}))
    exported = create_encoder(f"openclip:{folder}")
    assert exported.preprocess == Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
                                             interpolation="bilinear", resize_mode="squash")
    torch.testing.assert_close(exported.encode(pixels), expected)
    beside = create_encoder(f"openclip:{clip_config}@{folder / 'open_clip_model.safetensors'}")
    assert beside.preprocess == exported.preprocess  # open_clip_config.json next to the checkpoint


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickled_code_in_a_checkpoint_is_refused(clip_config, tmp_path):
    file = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(1), "payload": _Evil()}, file)
    with pytest.raises(Exception, match="(?i)weights.only"):
        create_encoder(f"openclip:{clip_config}@{file}")
    with pytest.raises(Exception, match="(?i)weights.only"):
        create_encoder(f"timm:vit_tiny_patch16_224@{file}", model_kwargs=TINY_VIT)


# ----------------------------------------------------------------------------------------------- timm

def test_timm_tiny_vit():
    enc = create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs=TINY_VIT)
    assert (enc.modality, enc.dim, enc.normalized) == ("image", 32, False)
    cfg = timm.get_pretrained_cfg("vit_tiny_patch16_224")
    assert enc.preprocess.size == (32, 32)
    assert enc.preprocess.mean == pytest.approx(cfg.mean) and enc.preprocess.crop_pct == pytest.approx(cfg.crop_pct)
    images = random_images()
    out = enc.encode_images(images)
    assert out.shape == (3, 32) and out.dtype == torch.float32
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))  # backbone features are not normalised
    assert_batching_invariant(out, [enc.encode_images([im]) for im in images])
    normalized = create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs=TINY_VIT, normalize=True)
    torch.testing.assert_close(normalized.encode_images(images).norm(dim=1), torch.ones(3))


def test_timm_folder_brings_its_pretrained_cfg_and_weights(tmp_path):
    torch.manual_seed(5)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_VIT).eval()
    data_config = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "interpolation": "bilinear", "crop_pct": 1.0}
    timm.models.save_for_hf(model, str(tmp_path / "vit"), safe_serialization=True, data_config=data_config)
    enc = create_encoder(f"timm:{tmp_path / 'vit'}")
    assert enc.preprocess == Preprocess(size=(32, 32), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                                        interpolation="bilinear", crop_pct=1.0)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixels)
    torch.testing.assert_close(enc.encode(pixels), expected)
    from_file = create_encoder(f"timm:vit_tiny_patch16_224@{tmp_path / 'vit' / 'model.safetensors'}",
                               model_kwargs=TINY_VIT)
    torch.testing.assert_close(from_file.encode(pixels), expected)


# ------------------------------------------------------------------------------------------ transformers

WORDS = "a red blue green black cotton linen shirt dress jacket with long short sleeves and buttons".split()


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _byte_bpe_tokenizer(padding_side: str = "right"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   padding_side=padding_side)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, str]:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    wp, bpe = _wordpiece_tokenizer(), _byte_bpe_tokenizer(padding_side="left")  # left: as many LLM tokenizers ship
    eos = bpe.eos_token_id
    builds = {
        "bert": (wp, BertModel(BertConfig(vocab_size=wp.vocab_size, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))),
        "gpt2": (bpe, GPT2Model(GPT2Config(vocab_size=bpe.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                           bos_token_id=eos, eos_token_id=eos))),
        "llama": (bpe, LlamaModel(LlamaConfig(vocab_size=bpe.vocab_size, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                              max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos,
                                              pad_token_id=None))),
    }
    out = {}
    for name, (tokenizer, model) in builds.items():
        folder = root / name
        tokenizer.save_pretrained(folder)
        model.save_pretrained(folder)
        out[name] = str(folder)
    return out


TEXTS = ["a red cotton shirt", "blue linen dress with long sleeves and buttons", "jacket", "green shirt"]


@pytest.mark.parametrize("family,pooling,decoder_only", [("bert", "mean", False), ("gpt2", "last", True),
                                                         ("llama", "last", True)])
def test_hf_tiny_towers(hf_folders, family, pooling, decoder_only):
    enc = create_encoder(f"hf:{hf_folders[family]}")
    assert (enc.modality, enc.dim, enc.decoder_only, enc.text_preprocess.pooling) == ("text", 32, decoder_only, pooling)
    assert enc.text_preprocess.max_length == 64  # from the config's max_position_embeddings
    out = enc.encode(TEXTS)
    assert out.shape == (4, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # batching pads the short texts; a left-padded causal model would shift their positions and differ here
    assert enc.tokenizer.padding_side == "right"
    assert_batching_invariant(out, [enc.encode([t]) for t in TEXTS])
    normalized = create_encoder(f"hf:{hf_folders[family]}", normalize=True)
    torch.testing.assert_close(normalized.encode(TEXTS).norm(dim=1), torch.ones(4))


def test_hf_decoder_options_change_the_input(hf_folders):
    plain = create_encoder(f"hf:{hf_folders['gpt2']}")
    prompted = create_encoder(f"hf:{hf_folders['gpt2']}", template='This garment: "{text}" means in one word:"')
    with_eos = create_encoder(f"hf:{hf_folders['gpt2']}", append_eos=True, pooling="mean")
    ids = with_eos.tokenize(["red shirt"])["input_ids"][0]
    assert ids[-1].item() == with_eos.tokenizer.eos_token_id
    assert not torch.allclose(plain.encode(TEXTS), prompted.encode(TEXTS))
    assert_batching_invariant(with_eos.encode(TEXTS), [with_eos.encode([t]) for t in TEXTS])
    with pytest.raises(ValueError, match="text"):
        create_encoder(f"hf:{hf_folders['gpt2']}", template="no placeholder")


def test_hf_random_uses_only_the_config(hf_folders):
    trained = create_encoder(f"hf:{hf_folders['bert']}")
    untrained = create_encoder(f"hf:{hf_folders['bert']}@random", seed=1)
    assert untrained.weights["random"] and not trained.weights.get("random")
    assert not torch.allclose(trained.encode(TEXTS), untrained.encode(TEXTS))


# ------------------------------------------------------------------------------------------- specs

def test_spec_errors_name_the_problem(clip_config):
    with pytest.raises(EncoderSourceError, match="ambiguous") as err:
        create_encoder("convnext_base@random")
    assert "openclip:convnext_base@random" in str(err.value) and "timm:convnext_base@random" in str(err.value)
    with pytest.raises(EncoderSourceError, match="@random"):
        create_encoder("openclip:ViT-B-32")  # no weights named: never silently random
    with pytest.raises(EncoderSourceError, match="laion2b_s34b_b79k"):
        create_encoder("openclip:ViT-B-32@no_such_tag")
    with pytest.raises(EncoderSourceError, match="unknown source"):
        create_encoder("clip:ViT-B-32@random")
    with pytest.raises(EncoderSourceError, match="source prefix"):
        create_encoder("no_such_model_anywhere@random")
    with pytest.raises(ValueError, match="builds"):
        create_encoder("timm:resnet18@random", "text")
    assert create_encoder(f"openclip:{clip_config}@random").spec.startswith("openclip:")


def test_local_path_and_tag_with_one_name_is_ambiguous(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "laion2b_s34b_b79k").write_bytes(b"")
    with pytest.raises(EncoderSourceError, match="ambiguous.*@./laion2b_s34b_b79k"):
        create_encoder("openclip:ViT-B-32@laion2b_s34b_b79k")
    (tmp_path / "acme" / "tiny-model").mkdir(parents=True)
    with pytest.raises(EncoderSourceError, match="ambiguous.*hf:./acme/tiny-model"):
        create_encoder("hf:acme/tiny-model")


@pytest.mark.parametrize("spec,tried,hint", [
    ("openclip:ViT-B-32@laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "openclip:ViT-B-32@/path/"),
    ("timm:vit_small_patch16_224@augreg_in1k", "timm/vit_small_patch16_224.augreg_in1k", "timm:vit_small_patch16_224@/path/"),
    ("hf:sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "hf:/path/"),
])
@pytest.mark.parametrize("offline", [False, True])
def test_unreachable_pretrained_weights_fail_with_what_was_tried(spec, tried, hint, offline, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(EncoderSourceError) as err:
        create_encoder(spec)
    message = str(err.value)
    assert tried in message and hint in message and "No weights were loaded" in message
    assert ("offline mode" if offline else "127.0.0.1:9 unreachable") in message


def test_preprocess_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"Preprocess: unknown key\(s\) \[.colour.\]"):
        from_dict(Preprocess, {"size": 32, "colour": "RGB"})
    p = from_dict(Preprocess, {"size": 32, "resize_mode": "longest", "fill_color": 255})
    out = p.resize(torch.zeros(1, 3, 16, 64, dtype=torch.uint8))  # wide image: letterboxed top and bottom
    assert out.shape == (1, 3, 32, 32)
    assert torch.all(out[..., 0, :] == 1) and torch.all(out[..., 16, :] == 0)
    assert np.allclose(Preprocess(size=(32, 32)).resize(torch.full((3, 50, 40), 255, dtype=torch.uint8)).numpy(), 1)
