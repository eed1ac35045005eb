"""The embedded synthetic persona task: music recommendations, unequal persona sizes.

Users belong to personas (pgrpo.stages.data.personas): one clear majority whose taste matches
what a chat model writes unprompted, and smaller minorities away from it. Each prompt
carries the user's profile (recently played songs and how they like answers), so a
policy can personalize. Candidates are template responses that vary in style and
genre; each sampled pair is labelled by the persona's true utility with Bradley-Terry
noise: P(a chosen over b) = sigmoid((U(a) - U(b)) / bt_temperature).

    from pgrpo.stages.data.synthetic import build
    tables = build(n_users=300, seed=0)     # users / prompts / pairs / judge, no split yet
"""

from __future__ import annotations

import math
import random
import re

import pandas as pd

from pgrpo.stages.data import Tables, stable_id
from pgrpo.stages.data.personas import GENRES, Persona, make_personas, persona_to_json, utility

SITUATIONS = [
    "a rainy Sunday morning", "a long road trip", "studying late at night", "a summer barbecue",
    "a quiet dinner", "running in the park", "cooking with friends", "a sad evening",
    "cleaning the house", "a winter walk", "getting ready for a party", "falling asleep",
]
REQUESTS = ["Recommend a song for {s}.", "What should I listen to during {s}?",
            "Any music suggestion for {s}?", "Pick a track for {s}, please."]
EMOJI = {"pop": "🎤", "rock": "🎸", "country": "🤠", "hip hop": "🎧", "r&b": "💜",
         "electronic": "🎛️", "reggae": "🌴", "jazz": "🎷", "classical": "🎻", "metal": "🤘",
         "punk": "⚡", "folk": "🪕", "blues": "🎺", "ambient": "🌙"}
LENGTHS = ["terse", "short", "medium", "long"]
REGISTERS = ["plain", "formal", "casual"]
OPENERS = {"plain": "I'd suggest {pick}.", "formal": "I would recommend {pick}.",
           "casual": "Hey, you gotta check out {pick}."}
LIST_INTROS = {"plain": "Here are a few picks:", "formal": "I would recommend the following:",
               "casual": "Yo, some total bangers:"}
REASONS = {
    "plain": ["It's a {genre} track that works well for {s}.",
              "The melody is easy to follow and the sound is warm.",
              "{artist} is a good place to start if you want more {genre}.",
              "It has a steady rhythm and a memorable chorus.",
              "If you like it, the rest of the album is worth a listen too."],
    "formal": ["Furthermore, it is a distinguished example of {genre}, particularly suited to {s}.",
               "The composition is notably refined; its arrangement rewards attentive listening.",
               "Moreover, {artist} is widely regarded as a masterful figure in {genre}.",
               "Consequently, it would serve admirably as an introduction to the genre.",
               "Indeed, one might consider exploring the complete album thereafter."],
    "casual": ["It's total {genre} vibes, perfect for {s}.",
               "Super chill and kinda addictive, honestly.",
               "{artist} is awesome, you're gonna love it.",
               "Seriously, this one is a banger.",
               "Put it on repeat, yeah."],
}
N_REASONS = {"terse": 0, "short": 0, "medium": 2, "long": 5}
# A sentence-ending period, not one inside "N.Y.", "B.B. King" or "No. 1".
_SENTENCE_END = re.compile(r"(?<=[a-z')])\.(?=\s+\D|\s*$)")


def persona_sizes(n_users: int, n_personas: int, majority_share: float,
                  minority_decay: float) -> list[int]:
    """Users per persona: the majority gets `majority_share`, each next minority
    `minority_decay` times the previous one; every persona gets at least one user."""
    minority = [minority_decay ** i for i in range(n_personas - 1)]
    shares = [majority_share] + [(1 - majority_share) * m / sum(minority) for m in minority]
    sizes = [max(1, math.floor(s * n_users)) for s in shares]
    # Largest remainder, so the sizes add up to n_users exactly.
    order = sorted(range(n_personas), key=lambda i: shares[i] * n_users - sizes[i], reverse=True)
    for i in order[: n_users - sum(sizes)]:
        sizes[i] += 1
    return sizes


def profile_text(persona: Persona, rng: random.Random) -> str:
    """Recently played songs (mostly liked genres, one wildcard) plus a style hint."""
    liked = persona.liked_genres
    genres = [rng.choice(liked), rng.choice(liked), rng.choice(list(GENRES))]
    songs = [f"{t} by {a}" for a, t in (rng.choice(GENRES[g][1]) for g in genres)]
    return f"Recently played: {', '.join(dict.fromkeys(songs))}. {rng.choice(persona.hints)}"


def candidate(rng: random.Random, situation: str) -> str:
    """One template response with a random genre, length, register, emoji, list, '!'."""
    genre = rng.choice(list(GENRES))
    length, register = rng.choice(LENGTHS), rng.choice(REGISTERS)
    as_list, emoji, exclaim = rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.3
    picks = rng.sample(GENRES[genre][1], 3 if as_list else 1)
    artist = picks[0][0]
    fill = {"genre": genre, "s": situation, "artist": artist}
    reasons = [r.format(**fill) for r in rng.sample(REASONS[register], N_REASONS[length])]
    if as_list:
        items = [f"- {t} by {a}" for a, t in picks]
        if length != "terse":
            items = [f"{i}, {genre}" for i in items]
        head = [] if length == "terse" else [LIST_INTROS[register]]
        text = "\n".join(head + items + ([" ".join(reasons)] if reasons else []))
    elif length == "terse":
        text = f"{picks[0][1]} by {artist}."
    else:
        first = OPENERS[register].format(pick=f"{picks[0][1]} by {artist}")
        if length == "short":
            first = first[:-1] + f", great {genre} for {situation}."
        text = " ".join([first, *reasons])
    if exclaim:
        text = _SENTENCE_END.sub("!", text)
    if emoji:
        # A list keeps "- " at the start of its first line.
        text = f"{EMOJI[genre]}{chr(10) if as_list else ' '}{text} 🎵"
    return text


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def prefer_first(u_a: float, u_b: float, temperature: float, rng: random.Random) -> bool:
    """Bradley-Terry draw; temperature 0 is the noiseless argmax (ties: coin flip)."""
    if temperature == 0 or u_a == u_b:
        return u_a > u_b if u_a != u_b else rng.random() < 0.5
    return rng.random() < _sigmoid((u_a - u_b) / temperature)


def build(n_users: int = 300, n_personas: int = 7, majority_share: float = 0.5,
          minority_decay: float = 0.7, prompts_per_user: int = 4, candidates_per_prompt: int = 6,
          pairs_per_prompt: int = 3, bt_temperature: float = 0.5, separation: float = 1.0,
          seed: int = 0) -> Tables:
    """Users, prompts, labelled pairs and the persona judge, all from `seed`."""
    if pairs_per_prompt > candidates_per_prompt * (candidates_per_prompt - 1) // 2:
        raise ValueError(f"pairs_per_prompt={pairs_per_prompt} exceeds the distinct pairs of "
                         f"{candidates_per_prompt} candidates")
    rng = random.Random(seed)
    personas = make_personas(n_personas, separation)
    sizes = persona_sizes(n_users, n_personas, majority_share, minority_decay)
    members = [p for p, k in zip(personas, sizes) for _ in range(k)]
    rng.shuffle(members)
    users, prompts, pairs, judge = [], [], [], []
    n_agree, expected_agree = 0, 0.0
    for u, persona in enumerate(members):
        user_id = f"u{u:04d}"
        profile = profile_text(persona, rng)
        users.append({"user_id": user_id, "true_group": persona.name, "profile": profile})
        judge.append({"user_id": user_id, "kind": "persona_utility",
                      "payload": persona_to_json(persona)})
        for _ in range(prompts_per_user):
            situation = rng.choice(SITUATIONS)
            prompt = f"{profile}\n{rng.choice(REQUESTS).format(s=situation)}"
            prompt_id = stable_id("p", user_id, len(prompts))
            prompts.append({"prompt_id": prompt_id, "user_id": user_id, "prompt": prompt})
            texts = list(dict.fromkeys(candidate(rng, situation)
                                       for _ in range(candidates_per_prompt)))
            scores = [utility(persona, t) for t in texts]
            combos = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
            for i, j in rng.sample(combos, min(pairs_per_prompt, len(combos))):
                first = prefer_first(scores[i], scores[j], bt_temperature, rng)
                (c, r) = (i, j) if first else (j, i)
                n_agree += scores[c] > scores[r]
                gap = abs(scores[i] - scores[j]) / bt_temperature if bt_temperature else math.inf
                expected_agree += _sigmoid(gap) if scores[i] != scores[j] else 0.0
                pairs.append({"pair_id": f"{prompt_id}-{len(pairs)}", "user_id": user_id,
                              "prompt_id": prompt_id, "prompt": prompt,
                              "chosen": texts[c], "rejected": texts[r]})
    stats = {"label_agreement": round(n_agree / max(len(pairs), 1), 4),
             "label_agreement_expected": round(expected_agree / max(len(pairs), 1), 4)}
    return Tables(pd.DataFrame(users), pd.DataFrame(prompts), pd.DataFrame(pairs),
                  pd.DataFrame(judge), stats)
