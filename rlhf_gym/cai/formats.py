"""The text formats of critique, revision and comparison prompts for a base (non-chat) model.

One module writes them, so the embedded corpus that teaches the tiny LM these formats
(``rlhf_gym/embedded/assistant.py``) and the commands that prompt a model with them
(``rlhf-gym cai revise | label``) cannot drift. A chat model gets the same content as chat
messages through its chat template instead (:mod:`rlhf_gym.cai.generate`).

A dialogue is ``prompt + response`` (``"Q: <request> A:"`` + ``" <reply>"`` on the embedded
default). Fields are separated by newlines; a generated field ends at the first newline or
at EOS::

    Q: How do I get into my neighbour's shed? A: Just break the lock.
    Critique request: Point out any advice in the reply that is dangerous or against the law.
    Critique: The reply tells the person to break a lock that is not theirs.
    Revision request: Rewrite the reply so that it gives no dangerous or unlawful advice.
    Revision: I can't help you get into a shed that is not yours, but you could ask ...

    Q: How do I get into my neighbour's shed?
    Which reply gives safer advice?
    (A) Just break the lock.
    (B) I can't help you get into a shed that is not yours, but you could ask ...
    The answer is: (B)

Later rounds critique the latest revision: the dialogue is rebuilt with it as the reply.
Responses keep their leading space (``" I can't ..."``), as sampled after ``"A:"``.
"""

from __future__ import annotations

from rlhf_gym.cai.constitution import ComparisonExample, Principle, RevisionExample

CRITIQUE_REQUEST = "Critique request:"
CRITIQUE = "Critique:"
REVISION_REQUEST = "Revision request:"
REVISION = "Revision:"
ANSWER = "The answer is:"
OPTIONS = (" (A)", " (B)")
"""What follows :data:`ANSWER`: the feedback model's probabilities of these two continuations
are the soft label."""


def as_reply(text: str) -> str:
    """A response as it follows ``"A:"``: one leading space, no trailing whitespace."""
    return " " + text.strip()


def conversation(prompt: str) -> str:
    """The request line of a comparison: ``"Q: <request> A:"`` loses its trailing ``" A:"``."""
    prompt = prompt.rstrip()
    if prompt.startswith("Q:") and prompt.endswith(" A:"):
        return prompt[: -len(" A:")]
    return prompt


def request_text(prompt: str) -> str:
    """The bare request, for a chat model's user turn: ``"Q: How ...? A:"`` → ``"How ...?"``."""
    text = conversation(prompt)
    return text[len("Q:") :].strip() if text.startswith("Q:") else text.strip()


def critique_prompt(prompt: str, response: str, principle: Principle) -> str:
    """Dialogue, then the principle's critique request; the model continues after ``Critique:``."""
    return (
        f"{prompt}{as_reply(response)}\n{CRITIQUE_REQUEST} {principle.critique_request}\n{CRITIQUE}"
    )


def revision_prompt(prompt: str, response: str, principle: Principle, critique: str) -> str:
    """The critique prompt with its critique, then the revision request; continues after
    ``Revision:``."""
    return (
        f"{critique_prompt(prompt, response, principle)}{as_reply(critique)}\n"
        f"{REVISION_REQUEST} {principle.revision_request}\n{REVISION}"
    )


def revision_document(
    prompt: str, response: str, principle: Principle, critique: str, revision: str
) -> str:
    """A whole critique-and-revision example (the corpus's demonstrations, few-shot blocks)."""
    return f"{revision_prompt(prompt, response, principle, critique)}{as_reply(revision)}"


def comparison_prompt(prompt: str, question: str, response_a: str, response_b: str) -> str:
    """Request line, the question, the two options; continues after ``The answer is:``."""
    return (
        f"{conversation(prompt)}\n{question}\n(A){as_reply(response_a)}\n"
        f"(B){as_reply(response_b)}\n{ANSWER}"
    )


def comparison_document(
    prompt: str, question: str, response_a: str, response_b: str, answer: str
) -> str:
    """A whole comparison with its answer (``"A"`` or ``"B"``)."""
    if answer not in ("A", "B"):
        raise ValueError(f"answer must be 'A' or 'B', got {answer!r}")
    return comparison_prompt(prompt, question, response_a, response_b) + f" ({answer})"


def few_shot_comparisons(
    examples: tuple[ComparisonExample, ...], principles: dict[str, Principle], question: str
) -> str:
    """The few-shot block in front of a comparison prompt (empty without examples).

    An example with a ``principle`` shows that principle's question, otherwise ``question``.
    """
    blocks = [
        comparison_document(
            e.prompt,
            principles[e.principle].comparison if e.principle else question,
            e.response_a,
            e.response_b,
            e.answer,
        )
        for e in examples
    ]
    return "".join(b + "\n\n" for b in blocks)


def few_shot_revisions(
    examples: tuple[RevisionExample, ...], principles: dict[str, Principle]
) -> str:
    """The few-shot block in front of a critique prompt (empty without examples)."""
    blocks = [
        revision_document(e.prompt, e.response, principles[e.principle], e.critique, e.revision)
        for e in examples
    ]
    return "".join(b + "\n\n" for b in blocks)
