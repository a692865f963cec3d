import pytest

from assistant.report.decoder.data import Finding
from assistant.report.decoder.vocab import (
    INDICATION,
    MODIFIER,
    SPECIALS,
    TERM,
    Vocab,
    detokenize,
    encode_condition,
    tokenize,
    words,
)


def test_tokenize_and_detokenize_round_trip() -> None:
    text = "The heart is normal in size. No pleural effusion, or pneumothorax. Stable x-XXXX."
    assert detokenize(tokenize(text)) == text


def test_words_drop_punctuation_and_lower_case() -> None:
    assert words("No acute (left) Disease.") == ["no", "acute", "left", "disease"]


def test_vocab_keeps_frequent_tokens_and_maps_the_rest_to_unknown() -> None:
    vocab = Vocab.build([["a", "b", "a"], ["a", "c", "b"]], min_count=2)
    assert vocab.tokens[:4] == SPECIALS and set(vocab.tokens[4:]) == {"a", "b"}
    assert vocab.encode(["a", "zzz"]) == [vocab.id("a"), 3]
    assert vocab.decode([vocab.id("a"), 2, vocab.id("b")]) == ["a"]  # stops at EOS


def test_vocab_refuses_a_list_without_the_special_tokens() -> None:
    with pytest.raises(ValueError, match="starts with"):
        Vocab(("a", "b"))


def test_finding_codes_split_into_term_and_modifiers() -> None:
    f = Finding.from_code("Opacity/lung/base/left", 0.8)
    assert (f.term, f.modifiers, f.probability) == ("Opacity", ("lung", "base", "left"), 0.8)
    with pytest.raises(ValueError, match="probability"):
        Finding.from_code("Opacity", 1.5)


def test_condition_groups_modifiers_with_their_finding() -> None:
    vocab = Vocab.build([["T:opacity", "M:left", "T:cardiomegaly", "I:cough"]], min_count=1)
    c = encode_condition(vocab, [Finding.from_code("Opacity/left"),
                                 Finding.from_code("Cardiomegaly")], "XXXX, cough")
    assert c.kinds == (TERM, MODIFIER, TERM, INDICATION)  # the redaction mark is dropped
    assert c.slots == (1, 1, 2, 0)
    assert c.ids[3] == vocab.id("I:cough")
