"""The simulator's reading mode answers from the passages in the prompt."""

from assistant.simulator.reading import UNANSWERED, reply_for


def paper(*passages):
    body = "\n".join(
        f'<passage ref="{ref}" section="">\n{text}\n</passage>'
        for ref, text in passages
    )
    return f'<paper title="T">\n{body}\n</paper>'


def test_it_ignores_requests_without_a_paper():
    assert reply_for([{"role": "user", "content": "Why is the sky blue?"}]) is None


def test_it_echoes_each_passage_with_its_reference():
    prompt = paper(("p. 2", "Water boils at 93.4 degrees. More."), ("p. 5", "Kettles."))

    answer = reply_for([{"role": "user", "content": prompt}])

    assert answer == "- Water boils at 93.4 degrees. [p. 2]\n- Kettles. [p. 5]"


def test_it_keeps_the_references_notes_carry_and_fills_headings():
    notes = paper(("p. 1; p. 2", "- A claim [p. 1]\n- A number 4.2 [p. 2]"))
    system = "Use these headings:\n## Problem\n## Method"

    answer = reply_for(
        [{"role": "system", "content": system}, {"role": "user", "content": notes}]
    )

    assert answer.startswith("## Problem\n\n- A claim [p. 1] [p. 2]")
    assert "## Method" in answer


def test_it_says_the_paper_does_not_answer_without_passages():
    answer = reply_for([{"role": "system", "content": paper()}])

    assert answer == UNANSWERED
