"""The Chinese alert texts: typography a Chinese reader expects (full-width punctuation
inside Chinese text, sentences closed by 。), and wording reviewed for the rules."""

from __future__ import annotations

import re
from pathlib import Path

from notifiers.render import RULE_TEXT_ZH

TEMPLATES = Path(__file__).resolve().parents[1] / "notifiers" / "templates"
# A half-width comma, colon, semicolon or parenthesis touching a Chinese character.
HALF_WIDTH_BESIDE_HAN = re.compile(r"[\u4e00-\u9fff][,:;()]|[,:;(][\u4e00-\u9fff]")


def test_rule_texts_use_chinese_punctuation() -> None:
    for rule, (name, description) in RULE_TEXT_ZH.items():
        assert description.endswith("。"), rule
        assert not name.endswith(("。", "：", "，")), rule  # noqa: RUF001
        for text in (name, description):
            assert not HALF_WIDTH_BESIDE_HAN.search(text), f"{rule}: {text}"


def test_templates_use_chinese_punctuation() -> None:
    for template in sorted(TEMPLATES.glob("*.zh.*.j2")):
        text = re.sub(r"\{[{%#].*?[}%#]\}", " ", template.read_text(), flags=re.DOTALL)
        text = re.sub(r"<[^>]+>", " ", text)  # HTML markup
        assert not HALF_WIDTH_BESIDE_HAN.search(text), template.name


def test_reviewed_wording() -> None:
    assert RULE_TEXT_ZH["privileged-container"][1] == "容器以特权模式（--privileged）运行。"  # noqa: RUF001
    assert RULE_TEXT_ZH["container-sprawl"][0] == "已停止容器堆积"
    suppressed = (TEMPLATES / "plain.zh.body.j2").read_text()
    assert "已被例外规则抑制" in suppressed
