"""Author-year citations whose labels tell apart two works of one author and year.

The book cites in the text as "Cho et al. (2014a)" or "(Cho et al., 2014a)" and
lists the bibliography under the same labels, "[Cho et al., 2014a]", instead of
pybtex's alpha keys ("[CvMBB14]") that match nothing in the text.

* ``authoryear`` (pybtex label style): the first author's last name, "and" the
  second's for two authors, "et al." for more, then the year ("n.d." without
  one); labels that would be equal get a, b, ... in bibliography order.
* ``authoryear`` (pybtex formatting style): pybtex's ``unsrt`` entries with those
  labels, sorted by authors, year and title. Every entry with an ``eprint``
  field shows "arXiv:NNNN.NNNNN" as a link (``unsrt`` already does that).
* ``author_year_label`` (sphinxcontrib-bibtex referencing style): the
  ``author_year`` style with the year of the citation read from the label, so
  that its suffix appears in the text too, and round brackets.

_config.yml selects them with ``bibtex_default_style: authoryear`` and
``bibtex_reference_style: author_year_label``.
"""
from collections import Counter
from dataclasses import dataclass, field
from string import ascii_lowercase

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle, GroupReferenceStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.referencing.extra_author import ExtraAuthorReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_empty import ExtraEmptyReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_label import ExtraLabelReferenceStyle
from sphinxcontrib.bibtex.style.referencing.extra_year import ExtraYearReferenceStyle
from sphinxcontrib.bibtex.style.template import join, join2, node, post_text, pre_text, reference

LABEL_SEP = ", "  # between the authors and the year of a label


def _plain(latex):
    """'R{\\'e}' -> 'Ré', '{NVIDIA}' -> 'NVIDIA'."""
    return Text.from_latex(latex).render_as("text")


def _last_name(person):
    return _plain(" ".join(person.prelast_names + person.last_names))


def _persons(entry):
    return entry.persons.get("author") or entry.persons.get("editor") or []


def author_part(entry):
    names = [_last_name(p) for p in _persons(entry)]
    if not names:
        return _plain(entry.fields.get("title", entry.key))
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_part(e) + LABEL_SEP + e.fields.get("year", "n.d.") for e in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] == 1:
                yield label
                continue
            suffix = ascii_lowercase[seen[label]]
            seen[label] += 1
            yield label + ("-" if label.endswith(".") else "") + suffix  # 2014a; n.d.-a


class AuthorYearSortingStyle(BaseSortingStyle):
    def sorting_key(self, entry):
        authors = " ".join(_last_name(p) + " " + _plain(" ".join(p.first_names))
                           for p in _persons(entry)).lower()
        return (authors, entry.fields.get("year", ""),
                _plain(entry.fields.get("title", "")).lower())


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "authoryear"
    default_sorting_style = "authoryear"


@node
def label_year(children, data):
    """The year of a citation as its label has it, suffix included (2014a)."""
    assert not children
    return Text(data["formatted_entry"].label.rsplit(LABEL_SEP, 1)[-1])


@dataclass
class _Parenthetical(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
            pre_text,
            reference[join(sep=self.author_year_sep)[
                self.person.author_or_editor_or_title(full="s" in role_name), label_year]],
            post_text,
        ]


@dataclass
class _Textual(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[
                self.bracket.left,
                join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
                    pre_text, reference[label_year], post_text],
                self.bracket.right,
            ],
        ]


@dataclass
class _Year(ExtraYearReferenceStyle):
    def inner(self, role_name):
        return reference[label_year]


def _round():
    return BracketStyle(left="(", right=")",
                        sep="; ")  # (Cho et al., 2014b; Sutskever et al., 2014)


@dataclass
class AuthorYearLabelReferenceStyle(AuthorYearReferenceStyle):
    bracket_textual: BracketStyle = field(default_factory=_round)  # Cho et al. (2014a)
    bracket_parenthetical: BracketStyle = field(default_factory=_round)  # (Cho et al., 2014a)

    def __post_init__(self):
        self.styles.extend([
            _Parenthetical(bracket=self.bracket_parenthetical, person=self.person,
                           author_year_sep=self.author_year_sep, pre_text_sep=self.pre_text_sep,
                           post_text_sep=self.post_text_sep),
            _Textual(bracket=self.bracket_textual, person=self.person,
                     text_reference_sep=self.text_reference_sep, pre_text_sep=self.pre_text_sep,
                     post_text_sep=self.post_text_sep),
            ExtraAuthorReferenceStyle(bracket=self.bracket_author, person=self.person),
            ExtraLabelReferenceStyle(bracket=self.bracket_label),
            _Year(bracket=self.bracket_year),
            ExtraEmptyReferenceStyle(),
        ])
        GroupReferenceStyle.__post_init__(self)


pybtex.plugin.register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
pybtex.plugin.register_plugin("pybtex.style.sorting", "authoryear", AuthorYearSortingStyle)
pybtex.plugin.register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_label",
                AuthorYearLabelReferenceStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
