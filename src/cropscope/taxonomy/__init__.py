"""Hierarchical crop taxonomies: the :class:`Taxonomy` tree, its sources (EuroCrops HCAT,
H2Crop, user YAML/CSV, shipped hierarchies), decoding and crosswalks."""

from cropscope.taxonomy.crosswalk import (
    CrosswalkResult,
    crosswalk_country,
    crosswalk_legend,
    hcat_to_taxonomy,
    read_country_table,
)
from cropscope.taxonomy.decoding import (
    decode,
    decode_consistent,
    decode_independent,
    inconsistent,
    level_probas_from_leaf,
)
from cropscope.taxonomy.sources import (
    builtin_taxonomy,
    h2crop_hcat_codes,
    list_builtin_taxonomies,
    list_taxonomies,
    load_h2crop,
    load_hcat,
    load_taxonomy,
    read_taxonomy,
    write_taxonomy,
)
from cropscope.taxonomy.tree import Node, Taxonomy

__all__ = [
    "CrosswalkResult",
    "Node",
    "Taxonomy",
    "builtin_taxonomy",
    "crosswalk_country",
    "crosswalk_legend",
    "decode",
    "decode_consistent",
    "decode_independent",
    "h2crop_hcat_codes",
    "hcat_to_taxonomy",
    "inconsistent",
    "level_probas_from_leaf",
    "list_builtin_taxonomies",
    "list_taxonomies",
    "load_h2crop",
    "load_hcat",
    "load_taxonomy",
    "read_country_table",
    "read_taxonomy",
    "write_taxonomy",
]
