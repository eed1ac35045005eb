"""Synthetic personas and their true utility: the judge of the synthetic task.

A persona is a name plus weights over the features `style_features` reads from ANY
free text (a template candidate or a policy's completion):

    len_terse/len_short/len_medium/len_long  soft length bands (memberships sum to 1)
    emoji, list, formal, casual, exclaim     counts, capped at 3 and scaled to [0, 1]
    empty                                    1 for a text without a single word
    genre:<name>                             1/k for each of the k genres mentioned

`utility(persona, text)` is the dot product. Every feature is bounded, so no
completion earns unbounded reward by being longer or by naming every genre
(naming all genres averages their weights, it does not sum them).

    from pgrpo.stages.data.personas import make_personas, utility
    majority, emoji_fan, *_ = make_personas(7, separation=1.0)
    utility(emoji_fan, "🎵 Try Take Five by Dave Brubeck! 🎷")   # high for emoji_fan
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

# genre -> (extra keywords, catalog of (artist, track)). Artist names are keywords too,
# so "Bohemian Rhapsody by Queen" counts as rock even when the word "rock" is missing.
GENRES: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "pop": (["pop"], [("Taylor Swift", "Shake It Off"), ("Dua Lipa", "Levitating"),
                      ("Ed Sheeran", "Shape of You")]),
    "rock": (["rock"], [("Queen", "Bohemian Rhapsody"), ("Foo Fighters", "Everlong"),
                        ("The Rolling Stones", "Paint It Black")]),
    "country": (["country"], [("Dolly Parton", "Jolene"), ("Johnny Cash", "Ring of Fire"),
                              ("Kacey Musgraves", "Slow Burn")]),
    "hip hop": (["hip hop", "hip-hop", "rap"], [("Kendrick Lamar", "Alright"),
                                                ("Nas", "N.Y. State of Mind"),
                                                ("A Tribe Called Quest", "Electric Relaxation")]),
    "r&b": (["r&b", "rnb", "soul"], [("Alicia Keys", "Fallin'"), ("Sade", "Smooth Operator"),
                                     ("Frank Ocean", "Thinkin Bout You")]),
    "electronic": (["electronic", "techno", "edm", "synth"], [
        ("Daft Punk", "Around the World"), ("Kraftwerk", "The Model"), ("Aphex Twin", "Xtal")]),
    "reggae": (["reggae", "ska"], [("Bob Marley", "Three Little Birds"),
                                   ("Toots and the Maytals", "Pressure Drop"),
                                   ("Burning Spear", "Marcus Garvey")]),
    "jazz": (["jazz", "bebop"], [("Miles Davis", "So What"), ("John Coltrane", "Naima"),
                                 ("Dave Brubeck", "Take Five")]),
    "classical": (["classical", "symphony", "sonata", "concerto", "orchestra"], [
        ("Claude Debussy", "Clair de Lune"), ("Johann Sebastian Bach", "Cello Suite No. 1"),
        ("Ludwig van Beethoven", "Moonlight Sonata")]),
    "metal": (["metal"], [("Metallica", "Master of Puppets"), ("Iron Maiden", "The Trooper"),
                          ("Black Sabbath", "Paranoid")]),
    "punk": (["punk"], [("Ramones", "Blitzkrieg Bop"), ("The Clash", "London Calling"),
                        ("Buzzcocks", "Ever Fallen in Love")]),
    "folk": (["folk"], [("Joni Mitchell", "A Case of You"), ("Bob Dylan", "Blowin' in the Wind"),
                        ("Nick Drake", "Pink Moon")]),
    "blues": (["blues"], [("B.B. King", "The Thrill Is Gone"), ("Etta James", "At Last"),
                          ("Muddy Waters", "Mannish Boy")]),
    "ambient": (["ambient", "drone"], [("Brian Eno", "An Ending (Ascent)"),
                                       ("Harold Budd", "The Pearl"),
                                       ("Stars of the Lid", "Requiem for Dying Mothers")]),
}


def _keyword_regex(words: list[str]) -> re.Pattern[str]:
    # (?<!\w)...(?!\w) instead of \b so that keywords like "r&b" match too; one
    # alternation (longest first) keeps it to a single pass over the text.
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


_GENRE_OF = {w.lower(): g for g, (kw, cat) in GENRES.items() for w in kw + [a for a, _ in cat]}
_GENRE_RE = _keyword_regex(list(_GENRE_OF))
_WORD = re.compile(r"\w+(?:['’-]\w+)*")
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B50\u2B55]")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+\S", re.MULTILINE)
_FORMAL = _keyword_regex([
    "furthermore", "moreover", "additionally", "consequently", "therefore", "particularly",
    "notably", "indeed", "i would recommend", "one might", "distinguished", "exquisite",
    "masterful", "renowned", "refined", "regarded", "admirably", "thereafter", "sincerely"])
_CASUAL = _keyword_regex([
    "hey", "yo", "gonna", "wanna", "gotta", "totally", "awesome", "cool", "super", "vibes",
    "vibe", "lol", "omg", "dude", "kinda", "sorta", "yeah", "chill", "banger", "honestly"])
# Length anchors in words: a one-line title, one sentence, a short paragraph (what a chat
# model writes unprompted), an essay.
_LENGTH_BANDS = {"len_terse": 3, "len_short": 12, "len_medium": 35, "len_long": 90}
STYLE_KEYS = [*_LENGTH_BANDS, "emoji", "list", "formal", "casual", "exclaim", "empty"]
FEATURE_KEYS = STYLE_KEYS + [f"genre:{g}" for g in GENRES]


def _capped(n: int, cap: int = 3) -> float:
    return min(n, cap) / cap


def _length_bands(words: int) -> dict[str, float]:
    """Triangular memberships over log(words) between the anchors; they sum to 1."""
    names, anchors = list(_LENGTH_BANDS), [math.log(a) for a in _LENGTH_BANDS.values()]
    x = min(max(math.log(max(words, 1)), anchors[0]), anchors[-1])
    out = dict.fromkeys(names, 0.0)
    for i in range(len(anchors) - 1):
        lo, hi = anchors[i], anchors[i + 1]
        if lo <= x <= hi:
            t = (x - lo) / (hi - lo)
            out[names[i]], out[names[i + 1]] = 1 - t, t
            break
    return out


def style_features(text: str) -> dict[str, float]:
    """Bounded, deterministic features of any text (keys: FEATURE_KEYS)."""
    words = len(_WORD.findall(text))
    feats: dict[str, float] = dict.fromkeys(FEATURE_KEYS, 0.0)
    if words == 0:
        feats["empty"] = 1.0
        return feats
    feats.update(_length_bands(words))
    feats["emoji"] = _capped(len(_EMOJI.findall(text)))
    feats["list"] = _capped(len(_LIST_LINE.findall(text)))
    feats["formal"] = _capped(len(_FORMAL.findall(text)))
    feats["casual"] = _capped(len(_CASUAL.findall(text)))
    feats["exclaim"] = _capped(text.count("!"))
    mentioned = sorted({_GENRE_OF[m.lower()] for m in _GENRE_RE.findall(text)})
    for g in mentioned:
        feats[f"genre:{g}"] = 1.0 / len(mentioned)
    return feats


@dataclass(frozen=True)
class Persona:
    name: str
    weights: dict[str, float]  # feature name -> weight; missing features weigh 0
    hints: tuple[str, ...] = ()  # how such a user describes their taste (profiles only)

    @property
    def liked_genres(self) -> list[str]:
        return [k.split(":", 1)[1] for k, w in self.weights.items()
                if k.startswith("genre:") and w > 0]


def utility(persona: Persona, text: str) -> float:
    """The persona's true utility of `text`: weights · style_features(text)."""
    feats = style_features(text)
    return float(sum(w * feats.get(k, 0.0) for k, w in persona.weights.items()))


def _g(**liked: float) -> dict[str, float]:
    return {f"genre:{k.replace('_', ' ').replace('rnb', 'r&b')}": v for k, v in liked.items()}


# Every persona pays for an empty answer, so saying nothing never beats a poor answer.
_COMMON = {"empty": -3.0}
# The majority sits where a pretrained chat model already is: a few sentences of plain
# prose, no emoji, mainstream genres. The minorities want what it rarely writes unprompted.
_TARGETS: list[tuple[str, dict[str, float], tuple[str, ...]]] = [
    ("mainstream", {"len_terse": -1.0, "len_short": 0.3, "len_medium": 1.5, "len_long": 0.5,
                    "emoji": -0.5, "list": -0.3, "exclaim": -0.2,
                    **_g(pop=1.0, rock=1.0, country=0.3)},
     ("A few sentences in plain words is perfect.",
      "I like a short explanation of why you picked it.")),
    ("emoji_fan", {"len_terse": 1.0, "len_short": 1.5, "len_medium": -0.3, "len_long": -1.5,
                   "emoji": 2.0, "exclaim": 1.0, "casual": 0.8, "formal": -1.0,
                   **_g(electronic=1.0, reggae=1.0, pop=-0.3)},
     ("I prefer short answers with emoji.", "Keep it fun and short, emoji welcome!")),
    ("formal_critic", {"len_terse": -1.5, "len_short": -0.5, "len_medium": 0.5, "len_long": 1.5,
                       "formal": 2.0, "casual": -1.5, "emoji": -1.5, "exclaim": -1.0,
                       **_g(classical=1.0, jazz=0.8, pop=-0.5)},
     ("I appreciate thorough, carefully written explanations.", "Please be detailed and formal.")),
    ("terse_lister", {"len_terse": 1.0, "len_short": 1.0, "len_medium": -0.5, "len_long": -1.5,
                      "list": 2.0, "emoji": -0.5, "formal": -0.5, "casual": -0.3,
                      **_g(metal=1.0, punk=1.0, pop=-0.5)},
     ("Just give me a bullet list, no fluff.", "Lists please, keep each item short.")),
    ("folk_storyteller", {"len_terse": -1.5, "len_short": -0.5, "len_medium": 0.5, "len_long": 1.5,
                          "casual": 1.0, "formal": -0.5, "list": -1.0, "emoji": -0.3,
                          **_g(folk=1.0, blues=1.0, electronic=-0.3)},
     ("I love hearing the story behind a song, take your time.",
      "Tell me about it like a friend would.")),
    ("minimalist", {"len_terse": 2.0, "len_short": 0.5, "len_medium": -1.0, "len_long": -2.0,
                    "emoji": -1.0, "list": -0.5, "exclaim": -0.5, "formal": -0.5, "casual": -0.5,
                    **_g(jazz=1.0, ambient=1.0)},
     ("Just the title, nothing else.", "One line, no extras.")),
    ("hype_casual", {"len_terse": -0.5, "len_short": 1.0, "len_medium": 0.8, "len_long": -0.5,
                     "casual": 1.5, "exclaim": 1.5, "formal": -1.5, "emoji": 0.5,
                     **_g(hip_hop=1.0, rnb=1.0, classical=-0.3)},
     ("Talk to me like a friend, keep it hype!", "Casual is good, get me excited!")),
]
MAX_PERSONAS = len(_TARGETS)


def make_personas(n: int = MAX_PERSONAS, separation: float = 1.0) -> list[Persona]:
    """The first `n` personas; [0] is the majority.

    Minority weights = majority + separation * (target - majority): 0 makes every
    persona the majority (no heterogeneity), 1 the targets above, >1 exaggerates them.
    """
    if not 2 <= n <= MAX_PERSONAS:
        raise ValueError(f"n_personas must be between 2 and {MAX_PERSONAS}, got {n}")
    base = {**_TARGETS[0][1], **_COMMON}
    out = [Persona(_TARGETS[0][0], base, _TARGETS[0][2])]
    for name, target, hints in _TARGETS[1:n]:
        target = {**target, **_COMMON}
        keys = sorted(set(base) | set(target))
        weights = {k: base.get(k, 0.0) + separation * (target.get(k, 0.0) - base.get(k, 0.0))
                   for k in keys}
        out.append(Persona(name, {k: round(w, 6) for k, w in weights.items() if w != 0}, hints))
    return out


def persona_to_json(persona: Persona) -> str:
    return json.dumps({"name": persona.name, "weights": persona.weights}, sort_keys=True)


def persona_from_json(payload: str) -> Persona:
    """Inverse of persona_to_json (the judge payload of kind 'persona_utility')."""
    data = json.loads(payload)
    unknown = sorted(set(data["weights"]) - set(FEATURE_KEYS))
    if unknown:
        raise ValueError(f"persona {data.get('name')!r}: unknown features {unknown}")
    return Persona(str(data["name"]), {k: float(v) for k, v in data["weights"].items()})
