"""Class-mapping files: dataset class names to ontology classes (``load_class_mapping``).

A TSV, CSV or YAML file with one row per dataset class: its name, an ontology id or label, and
optional parent ids. A row whose id resolves maps to that class; a row with parents and no match
adds a new class under them. Every problem is one OntologyError naming the file and the row.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from kgmeta.errors import OntologyError
from kgmeta.limits import check_yaml_depth
from kgmeta.ontology.model import SUBCLASS_OF, Edge, Ontology, Term, _short
from kgmeta.ontology.safety import _read_text
from kgmeta.vocab import KGM_NS

_NAME_KEYS = ("class", "class_name", "name", "dataset_class", "folder")
_ID_KEYS = ("ontology_id", "id", "iri", "curie", "term", "ontology", "ontology_label")
_PARENT_KEYS = ("parents", "parent", "parent_ids", "parent_id", "is_a")
_ALL_KEYS = set(_NAME_KEYS) | set(_ID_KEYS) | set(_PARENT_KEYS) | {"label", "index"}


def _row_label(row: dict[str, object]) -> str | None:
    """The row's label column (``ontology_label``, else ``label``): what a mapped class without a
    label of its own in the ontology is called."""
    for key in ("ontology_label", "label"):
        value = row.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _row_fields(row: dict[str, object]) -> tuple[object, object, object]:
    """(class name, id-or-label, parents) of one row. ``label`` is the class name when the row
    also has an id column (``index label ontology_id``), else it is the ontology label."""
    def pick(keys):
        for k in keys:
            if row.get(k) not in (None, ""):
                return row[k]
        return None

    has_name_col = any(k in row for k in _NAME_KEYS)
    has_id_col = any(k in row for k in _ID_KEYS)
    if has_name_col:
        name = pick(_NAME_KEYS)
        ident = pick(_ID_KEYS) if has_id_col else pick(("label",))
    else:
        name = pick(("label",)) if has_id_col else None
        ident = pick(_ID_KEYS)
    return name, ident, pick(_PARENT_KEYS)


def _mapping_rows(path: Path) -> list[tuple[int, str, str | None, list[str], str | None]]:
    """(row number, class name, id-or-label, parent ids, label column) per row."""
    if not path.exists():
        raise OntologyError(f"{path}: no such class-mapping file; check the path")
    if path.is_dir():
        raise OntologyError(f"{path}: is a directory; pass a .tsv, .csv or .yaml mapping file")
    text = _read_text(path, "a class-mapping file")
    ext = path.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if ext in (".yaml", ".yml"):
        import yaml

        check_yaml_depth(text, str(path), 8, "a class-mapping file is 2-3 levels deep: flatten it",
                         OntologyError)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
            raise OntologyError(f"{path}: YAML format{where}: {_short(str(problem), 200)}; "
                                "fix the YAML syntax") from None
        if isinstance(data, dict):
            for i, (k, v) in enumerate(data.items(), 1):
                if isinstance(v, dict):
                    rows.append((i, {"class": str(k), **{str(a): b for a, b in v.items()}}))
                else:
                    rows.append((i, {"class": str(k), "id": v}))
        elif isinstance(data, list):
            for i, v in enumerate(data, 1):
                if not isinstance(v, dict):
                    raise OntologyError(f"{path}: entry {i}: expected a mapping with class/id/parents, "
                                        f"got {v!r}; write '- {{class: NAME, id: DOID:1909}}'")
                rows.append((i, {str(a): b for a, b in v.items()}))
        else:
            raise OntologyError(f"{path}: YAML must be a mapping 'class: id' or a list of "
                                "{class, id, parents} entries")
    elif ext in (".tsv", ".csv", ".txt"):
        delim = "\t" if ext in (".tsv", ".txt") else ","
        reader = list(csv.reader(text.splitlines(), delimiter=delim))
        lines = [(i, r) for i, r in enumerate(reader, 1) if any(c.strip() for c in r)
                 and not r[0].lstrip().startswith("#")]
        if not lines:
            raise OntologyError(f"{path}: class-mapping file is empty; add rows 'class<TAB>id[<TAB>parents]'")
        first = [c.strip().lower() for c in lines[0][1]]
        if any(c in _ALL_KEYS for c in first):
            header, lines = first, lines[1:]
        else:
            header = ["class", "id", "parents"]
        for i, r in lines:
            rows.append((i, {h: (r[j].strip() if j < len(r) else "") for j, h in enumerate(header)}))
    else:
        raise OntologyError(f"{path}: unknown class-mapping format {ext or '(none)'!r}; "
                            "use .tsv, .csv or .yaml")
    if not rows:
        raise OntologyError(f"{path}: class-mapping file has no rows (only a header or an empty "
                            "mapping); add one row per dataset class: class name, ontology id")
    out = []
    for i, row in rows:
        name, ident, parents = _row_fields(row)
        if name is None:
            raise OntologyError(f"{path}: row {i}: no class name; put the dataset class name in the "
                                "first column (or a 'class' column)")
        for what, value in (("class name", name), ("ontology id", ident)):
            if isinstance(value, (list, dict, set, tuple)):
                raise OntologyError(f"{path}: row {i}: the {what} is a {type(value).__name__}, "
                                    f"not a name; write one CURIE or label, e.g. DOID:1909")
        if isinstance(parents, str):
            plist = [p.strip() for p in re.split(r"[;|]", parents) if p.strip()]
        elif isinstance(parents, list):
            if any(isinstance(p, (list, dict, set, tuple)) for p in parents):
                raise OntologyError(f"{path}: row {i}: parents must be a list of ids, not nested "
                                    "lists or mappings; write parents: [DOID:162, DOID:1909]")
            plist = [str(p).strip() for p in parents if p is not None and str(p).strip()]
        elif parents is None:
            plist = []
        elif isinstance(parents, (int, float)) and not isinstance(parents, bool):
            plist = [str(parents)]
        else:
            raise OntologyError(f"{path}: row {i}: parents = {_short(repr(parents))} is not a "
                                "list of ids; write parents: [DOID:162] or 'DOID:162;DOID:1909'")
        out.append((i, str(name).strip(), None if ident is None else str(ident).strip(), plist, _row_label(row)))
    return out


def _kgm_iri(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "class"
    return KGM_NS + slug


def load_class_mapping(path: str | Path, ontology: Ontology) -> tuple[Ontology, dict[str, str]]:
    """Map dataset class names to ontology IRIs from a TSV/CSV/YAML file.

    Columns: class name, ontology id or label (optional when parents are given), optional parent
    ids separated by ``;``. A row whose id resolves maps to that class; a row without a match but
    with parents adds a new class (IRI in the kgm namespace, label = the class name, subClassOf
    each parent). A mapped class that has no label in the ontology takes the row's label column
    (``ontology_label``, else ``label``). Returns ``(ontology including the new classes and
    labels, {class name: IRI})``.
    """
    path = Path(path)
    rows = _mapping_rows(path)
    seen: dict[str, int] = {}
    mapping: dict[str, str] = {}
    new_terms: dict[str, Term] = {}
    new_edges: list[Edge] = []
    for i, name, ident, parents, label in rows:
        if name in seen:
            raise OntologyError(f"{path}: row {i}: class {name!r} already mapped in row {seen[name]}; "
                                "keep one row per class")
        seen[name] = i
        if ident:
            rep = ontology.resolve_many([ident])
            if ident in rep.matches:
                iri = mapping[name] = rep.matches[ident]
                term = ontology.terms[iri]
                if not term.label and label and iri not in new_terms:
                    new_terms[iri] = dataclasses.replace(term, label=label)
                continue
            if ident in rep.ambiguous:
                cands = ", ".join(ontology.curie(c) for c in rep.ambiguous[ident][:5])
                raise OntologyError(f"{path}: row {i}: {ident!r} matches several classes ({cands}); "
                                    "write the CURIE of the one you mean")
            if not parents:
                note = rep.notes.get(ident)
                if note:  # a deprecated term
                    raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} is {note}; "
                                        "map the class to a live term")
                if ":" in ident and " " not in ident:  # looks like a CURIE or IRI
                    try:
                        iri = ontology.expand(ident)
                    except OntologyError as e:
                        raise OntologyError(f"{path}: row {i}: {e}") from None
                    raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} is not a "
                                        f"class of the ontology (no term {iri}); check the id and "
                                        "the ontology files, or give parent ids to add it as a "
                                        "new class")
                sugg = rep.suggestions.get(ident)
                hint = f" (close labels: {', '.join(sugg)})" if sugg else ""
                raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} matches no class"
                                    f"{hint}; fix the id/label or give parent ids to add it as a new class")
        elif not parents:
            raise OntologyError(f"{path}: row {i}: class {name!r} has neither an ontology id/label nor "
                                "parent ids; add an id (e.g. DOID:1909) or parents to attach a new class")
        parent_iris = []
        for p in parents:
            iri = ontology.resolve(p)
            if iri is None:
                rep = ontology.resolve_many([p])
                what = "is ambiguous" if p in rep.ambiguous else "matches no class"
                raise OntologyError(f"{path}: row {i}: parent {p!r} of class {name!r} {what}; "
                                    "use the parent's CURIE")
            parent_iris.append(iri)
        iri = _kgm_iri(name)
        if iri in ontology.terms or iri in new_terms:
            raise OntologyError(f"{path}: row {i}: new class {name!r} would get IRI {iri}, which "
                                "already exists; map the row to that class's id instead")
        new_terms[iri] = Term(iri, label=name, annotations={
            "https://w3id.org/kgmeta/onto/addedFrom": [str(path)]})
        new_edges.extend(Edge(iri, SUBCLASS_OF, p) for p in parent_iris)
        mapping[name] = iri
    if new_terms:
        ontology = ontology.with_terms(new_terms, new_edges, source=str(path))
    return ontology, mapping
