"""Protected spans: the patterns, masking and restoring, pairs, tags and glossary terms."""

import string
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.data.protect import (
    MAX_SPANS,
    PLACEHOLDER,
    Protector,
    placeholder,
    span_fidelity,
    spans_of,
)
from nmt.errors import NmtError

ALL = Protector("all")


@pytest.mark.parametrize(
    "pattern, text, spans",
    [
        ("printf", "Copy %s to %d files", ["%s", "%d"]),
        (
            "printf",
            "%1$s of %2$s, %-5.2f, %lu, %lld, %zu, %x",
            ["%1$s", "%2$s", "%-5.2f", "%lu", "%lld", "%zu", "%x"],
        ),
        ("printf", "%(name)s has %(count)d items", ["%(name)s", "%(count)d"]),
        ("printf", "Page %1 of %2", ["%1", "%2"]),
        ("printf", "100%% done, 50% of files, 100 % sure", ["%%"]),  # an escape is a span
        (
            "brace",
            "Open {0} in {name} or {} with {0:.2f} {user.name}",
            ["{0}", "{name}", "{}", "{0:.2f}", "{user.name}"],
        ),
        ("brace", "a set {a, b} stays", []),
        (
            "brace",
            "{{name}} {{ count }} {0,number,integer} {n, plural, one}",
            ["{{name}}", "{{ count }}", "{0,number,integer}", "{n, plural, one}"],
        ),
        (
            "printf",
            "%@ %1$@ %{count} %<count>d, %1 %2",
            ["%@", "%1$@", "%{count}", "%<count>d", "%1", "%2"],
        ),
        ("shell", "${var:-default} ${HOME}", ["${var:-default}", "${HOME}"]),
        ("shell", "Set ${HOME} and $PATH and $1, not $50", ["${HOME}", "$PATH", "$1"]),
        (
            "shell",
            "On ${Year}-${Month} at ${24Hour}:${Minute}",
            ["${Year}", "${Month}", "${24Hour}", "${Minute}"],
        ),
        ("brace", "Literal {{ and {0}, then }}", ["{{", "{0}", "}}"]),
        (
            "xml",
            'See <b>this</b>, <br/>, <a href="x.html">link</a> &amp; &#169; &#x4E2D;',
            ["<b>", "</b>", "<br/>", '<a href="x.html">', "</a>", "&amp;", "&#169;", "&#x4E2D;"],
        ),
        ("xml", "if a < b and c > d & e", []),
        (
            "xml",
            "<!-- c --> Text <?pi x?> <![CDATA[a <b> & c]]>",  # whole, their contents unread
            ["<!-- c -->", "<?pi x?>", "<![CDATA[a <b> & c]]>"],
        ),
        (
            "url",
            "Go to https://example.org/a?b=1. Or www.debian.org, (http://x.org/y)",
            ["https://example.org/a?b=1", "www.debian.org", "http://x.org/y"],
        ),
        (
            "email",
            "Write to bugs@debian.org or a.b+c@mail.example.co.uk.",
            ["bugs@debian.org", "a.b+c@mail.example.co.uk"],
        ),
    ],
)
def test_each_pattern_finds_exactly_its_spans(pattern, text, spans):
    assert [span.source for _, _, span in Protector(pattern).find(text)] == spans


def test_names_and_user_patterns_are_validated_with_the_key_named():
    with pytest.raises(NmtError, match="data.protect.*unknown pattern prinf"):
        Protector("prinf")
    with pytest.raises(NmtError, match="data.protect_regex.*not a regular expression"):
        Protector(regex="(a")
    with pytest.raises(NmtError, match="empty string"):
        Protector(regex="x*")
    assert [s.source for _, _, s in Protector(regex=r"\bID_[A-Z]+\b").find("Use ID_FOO")] == [
        "ID_FOO"
    ]


def test_mask_numbers_spans_in_order_and_restore_gives_the_text_back():
    masked = ALL.mask('Could not open "%s" (%d of {0})')
    assert masked.text == 'Could not open "｟0｠" (｟1｠ of ｟2｠)'
    assert masked.restore("Impossible d'ouvrir « ｟0｠ » (｟1｠ sur ｟2｠)") == (
        "Impossible d'ouvrir « %s » (%d sur {0})"
    )


def test_a_placeholder_written_in_the_input_is_itself_protected():
    masked = Protector("printf").mask("literal ｟3｠ and %s")
    assert [s.source for s in masked.spans] == ["｟3｠", "%s"]
    assert masked.restore(masked.text) == "literal ｟3｠ and %s"


def test_pairs_share_numbering_and_mismatched_pairs_stay_unmasked():
    assert ALL.mask_pair("Delete %s from %s in %d", "Supprimer %s de %s dans %d") == (
        "Delete ｟0｠ from ｟1｠ in ｟2｠",
        "Supprimer ｟0｠ de ｟1｠ dans ｟2｠",
    )
    assert ALL.mask_pair("%1$s of %2$s", "%2$s de %1$s") == ("｟0｠ of ｟1｠", "｟1｠ de ｟0｠")
    assert ALL.mask_pair("Delete %s?", "Supprimer ?") is None
    assert ALL.mask_pair("No span", "Aucun") == ("No span", "Aucun")


def test_tags_are_paired_where_they_nest():
    spans = ALL.mask("<b>a <i>b</i></b> <u>c</b> <br/>").spans
    assert [(s.source, s.partner) for s in spans] == [
        ("<b>", -1),
        ("<i>", -1),
        ("</i>", 1),
        ("</b>", 0),
        ("<u>", -1),
        ("</b>", -1),  # does not close the innermost open tag (<u>): not paired
        ("<br/>", -1),
    ]


def test_glossary_terms_are_whole_words_longest_first_and_case_sensitive():
    glossary = {"noise profile": "profil de bruit", "noise": "bruit", "Audacity": "Audacity"}
    masked = Protector("printf", glossary=glossary).mask(
        "Audacity: noise profile, noise, noises, audacity, %s"
    )
    assert masked.text == "｟0｠: ｟1｠, ｟2｠, noises, audacity, ｟3｠"
    assert [(s.target, s.term) for s in masked.spans] == [
        ("Audacity", True),
        ("profil de bruit", True),
        ("bruit", True),
        ("%s", False),
    ]
    folded = Protector(glossary=glossary, ignore_case=True).mask("NOISE and Noise Profile")
    assert [s.target for s in folded.spans] == ["bruit", "profil de bruit"]


def test_restore_escapes_bare_markup_characters_for_xml():
    masked = ALL.mask("<b>Tom</b>")
    assert masked.restore("｟0｠Tom & Jerry <3｟1｠ &amp;", escape_xml=True) == (
        "<b>Tom &amp; Jerry &lt;3</b> &amp;"
    )


def test_at_most_max_spans_are_masked_per_line():
    masked = ALL.mask(" ".join(["%s"] * (MAX_SPANS + 3)))
    assert len(masked.spans) == MAX_SPANS
    assert masked.unprotected == 3
    assert ALL.mask_pair(" ".join(["%s"] * (MAX_SPANS + 1)), "%s") is None
    assert masked.text.count("%s") == 3


def test_fidelity_compares_multisets_per_line():
    sources = ["%s and %d", "{0}", "none"]
    assert span_fidelity(sources, ["%d et %s", "{1}", "rien"], ALL) == pytest.approx(2 / 3)
    assert spans_of("%s %s <b>", ALL) == Counter({"%s": 2, "<b>": 1})


_SPAN = st.sampled_from(["%s", "%d", "%1$s", "{0}", "{name}", "${HOME}", "<b>", "</b>", "&amp;",
                         "https://x.org/a", "a@b.org", "%(n)d"])  # fmt: skip
_WORD = st.text(string.ascii_letters + "éà", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_SPAN, _WORD), min_size=1, max_size=12), st.randoms())
def test_masking_round_trips_and_pairs_keep_every_span(parts, rng):
    """Random lines of words and spans: restore(mask(x)) == x; a pair whose target holds the
    same spans in another order masks both sides to the same placeholder multiset, and
    restoring the masked target with the source's spans gives the target back."""
    text = " ".join(parts)
    masked = ALL.mask(text)
    assert masked.restore(masked.text) == text
    assert Counter(PLACEHOLDER.findall(masked.text)) == Counter(
        str(i) for i in range(len(masked.spans))
    )
    shuffled = parts[:]
    rng.shuffle(shuffled)
    target = " ".join(shuffled)
    pair = ALL.mask_pair(text, target)
    assert pair is not None and pair[0] == masked.text
    assert sorted(PLACEHOLDER.findall(pair[1])) == sorted(PLACEHOLDER.findall(pair[0]))
    assert masked.restore(pair[1]) == target
    assert placeholder(0) not in text


def test_a_quoted_angle_bracket_does_not_end_a_tag():
    """`title="a>b"` gave a false "no partner tag" warning: attributes are read as XML does."""
    xml = Protector("xml")
    assert xml.mask("<a title=\"a>b\">x</a> <span class='c>d'>y</span>").unpaired_tags() == []
    assert xml.mask("<b>x</b> <i>").unpaired_tags() == ["<i>"]
