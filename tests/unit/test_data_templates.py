"""Templates: validation messages name the field; renderings match the recipe and the tokenizer's own."""
import json

import pytest

from mindr1.artifacts import qwen25_tokenizer_dir
from mindr1.data.templates import (TemplateError, get_template, load_templates, render_prompt,
                                   render_segments, template_names)
from mindr1.data.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer(qwen25_tokenizer_dir())


def test_required_templates_exist():
    for name in ("empty", "qwen", "qwen_r1", "llama3", "chatml", "deepseek_r1", "chat_template"):
        assert name in template_names()


def test_qwen_r1_is_the_r1_zero_prompt():
    text = render_prompt("qwen_r1", "What is 2+3?")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "A conversation between User and Assistant.")
    assert "<think> </think> and <answer> </answer> tags" in text
    assert "Put your final answer within \\boxed{}.\nWhat is 2+3?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_segments_mark_only_assistant_turns(tok):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    segs = render_segments("chatml", msgs, tok)
    assert [t for t, trained in segs if trained] == ["b<|im_end|>\n", "d<|im_end|>\n"]
    assert segs[2] == ("<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n", False)
    empty = render_segments("empty", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], tok)
    assert empty == [("q", False), ("r<|im_end|>", True)]


def test_chat_template_matches_transformers(tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()))
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    assert render_prompt("chat_template", msgs, tok) == hf.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True)
    full = msgs + [{"role": "assistant", "content": "A."}]
    segs = render_segments("chat_template", full, tok)
    assert "".join(t for t, _ in segs) == hf.apply_chat_template(full, tokenize=False)
    assert [t for t, trained in segs if trained] == ["<think>\n\n</think>\n\nA.<|im_end|>\n"]


@pytest.mark.parametrize("spec, message", [
    ({"assistant_prefix": "", "assistant": "{content}"}, "missing required field 'user'"),
    ({"user": "no slot", "assistant_prefix": "", "assistant": "{content}"}, "field 'user' must contain {content}"),
    ({"user": "{content}{eot}", "assistant_prefix": "", "assistant": "{content}"}, "field 'user' uses unknown placeholder {eot}"),
    ({"user": "{content}", "assistant_prefix": 3, "assistant": "{content}"}, "field 'assistant_prefix' must be a string"),
    ({"user": "{content}", "assistant_prefix": "", "assistant": "{content}", "colour": "x"}, "unknown field 'colour'"),
])
def test_bad_template_names_the_field(tmp_path, spec, message):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"mine": spec}))
    with pytest.raises(TemplateError, match="template 'mine'.*" + message.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(").replace(")", r"\)")):
        load_templates(path)


def test_user_added_template(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"mine": {"user": "Q: {content}\n", "assistant_prefix": "A: ",
                                         "assistant": "{content}\n", "system": "[{content}]"}}))
    assert get_template("mine", path).user == "Q: {content}\n"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "x \\boxed{}"}]
    assert render_prompt("mine", msgs, path=path) == "[s]Q: x \\boxed{}\nA: "
    with pytest.raises(TemplateError, match="unknown prompt type 'nope'"):
        render_prompt("nope", "x", path=path)
