"""The lead's view of the team: open conflicts with everything needed to settle them, and how well
annotators agree on the images they labeled twice (overlap, third opinions, conflicts).

    rows = open_conflicts(project)        # one per image: label in force, each conflicting answer
    report = agreement(project)           # loop.agreement.summary over the people's answers
"""

from __future__ import annotations

from loop import agreement as stats
from loop.project import Project

PEOPLE_SOURCES = ("human", "review")


def ratings(project: Project) -> dict[int, dict[str, int]]:
    """{image id: {person: class index}}: each person's standing answer per image (undone answers
    left out), from the label log and from the answers kept as conflicts. A lead's settling of a
    conflict and a review of a suspect are not ratings: their reviewer saw the other answers."""
    store = project.store
    undone = {e["undoes"] for e in store.label_events(project.id) if e["undoes"]}
    out: dict[int, dict[str, int]] = {}
    for event in store.label_events(project.id):
        if (event["source"] not in PEOPLE_SOURCES or event["undoes"] or event["id"] in undone
                or event["class_id"] is None or event["origin"] in ("retract", "conflict", "suspect")):
            continue
        out.setdefault(event["image_id"], {})[event["annotator"]] = project.class_index[event["class_id"]]
    for conflict in store.conflicts(project.id, status=None):
        if conflict["class_id"] is not None:
            out.setdefault(conflict["image_id"], {})[conflict["annotator"]] = \
                project.class_index[conflict["class_id"]]
    return out


def agreement(project: Project) -> dict:
    """`loop.agreement.summary` of the people's answers, with class names instead of indices."""
    report = stats.summary(ratings(project), len(project.class_names))
    for row in report.get("classes", []):
        if isinstance(row.get("class"), int):
            row["class"] = project.class_names[row["class"]]
    return report


def open_conflicts(project: Project) -> list[dict]:
    """One row per image with open conflicts: its path and split, the label in force (class and
    who), each answer kept beside it (who, class, why), and who it was sent to, if anyone."""
    store = project.store
    names = {c["id"]: c["name"] for c in project.class_rows}
    events = store.latest_events(project.id)
    sent = {a["image_id"]: a["annotator"] for a in store.assignments(project.id)}
    by_image: dict[int, dict] = {}
    for conflict in store.conflicts(project.id):
        image_id = conflict["image_id"]
        if image_id not in by_image:
            image = store.image(project.id, image_id)
            force = events.get(image_id)
            by_image[image_id] = {
                "image_id": image_id, "path": image["path"], "split": image["split"],
                "in_force": names.get(force["class_id"]) if force else None,
                "in_force_by": force["annotator"] if force else None,
                "answers": [], "sent_to": sent.get(image_id)}
        by_image[image_id]["answers"].append({
            "annotator": conflict["annotator"], "class": names.get(conflict["class_id"]),
            "reason": conflict["reason"], "at": conflict["created_at"]})
    return list(by_image.values())
