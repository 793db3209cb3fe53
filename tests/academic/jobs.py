"""Builders for polish-job tests: a job from a shared case, run chunk by chunk."""

from academic import actions
from academic.encoding import decode_bytes
from academic.models import PolishJob
from academic.tasks import polish_chunk


def case_bytes(shared_dir, name):
    return (shared_dir / "academic-cases" / name).read_bytes()


def start(owner, data, name="paper.tex", kind=PolishJob.SourceKind.LATEX, **fields):
    """A job for the bytes `data` as if uploaded under `name`; not yet run."""
    values = {
        "task": PolishJob.Task.POLISH,
        "preset": PolishJob.Preset.JOURNAL,
        "glossary": "",
        "model": "deepseek-v3",
        "file_name": name,
    }
    values.update(fields)
    document = actions.Document(name, decode_bytes(data), kind)
    return actions.start_job(owner, [document], values)


def run(job):
    """Run every chunk task of `job` in this thread, in order."""
    for chunk_id in job.chunks.values_list("pk", flat=True):
        polish_chunk(chunk_id)
    job.refresh_from_db()
    return job
