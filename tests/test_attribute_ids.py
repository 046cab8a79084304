"""Tokens read off known item attributes: the reference the learned tokenizer (stages 1-2) is measured against."""
import numpy as np
import pytest

from qbert4rec_lib.experiments.presets import ExperimentConfig
from qbert4rec_lib.experiments.stages import semantic_ids
from qbert4rec_lib.semantic.attribute_ids import attribute_id_table


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    from qbert4rec_lib.data import synthetic as S
    from qbert4rec_lib.data import synthetic_folder as SF
    from qbert4rec_lib.data.loaders import load_dataset

    return load_dataset(SF.generate_catalog(S.SyntheticConfig(num_items=300, num_users=500),
                                            tmp_path_factory.mktemp("attr") / "small"))


@pytest.mark.parametrize("source,columns", [("ground_truth", 4), ("metadata", 2)])
def test_attribute_ids_are_unique_and_follow_the_attributes(catalog, source, columns):
    table = attribute_id_table(catalog, source)
    assert table.ids.shape == (catalog.num_items, columns + 1)
    assert len({tuple(r) for r in table.ids}) == catalog.num_items  # the suffix keeps items apart
    first = table.ids[:, 0]  # the subcategory (ground truth) / the category leaf (metadata): the same partition
    sub = catalog.ground_truth["subcategory"]
    for token in np.unique(first):
        assert len(np.unique(sub[first == token])) == 1
    if source == "metadata":
        brands = np.array(catalog.items.brands)
        for token in np.unique(table.ids[:, 1]):
            assert len(set(brands[table.ids[:, 1] == token])) == 1


def test_semantic_ids_reads_attribute_sources_without_stages_1_2(catalog):
    ids = semantic_ids(catalog, ExperimentConfig(semantic_source="metadata"), progress=False)
    assert ids.features is None and ids.fusion is None and ids.quantize is None and ids.source == "metadata"
    again = semantic_ids(catalog, ExperimentConfig(semantic_source="metadata"), progress=False)
    assert again.key == ids.key and np.array_equal(again.table.ids, ids.table.ids)
    assert semantic_ids(catalog, ExperimentConfig(semantic_source="ground_truth"), progress=False).key != ids.key


def test_data_without_attributes_is_refused_clearly(catalog):
    bare = catalog.__class__(**{**catalog.__dict__, "ground_truth": None})
    with pytest.raises(ValueError, match="generated catalogs only"):
        attribute_id_table(bare, "ground_truth")
    with pytest.raises(ValueError, match="source must be one of"):
        attribute_id_table(catalog, "colour")
    with pytest.raises(ValueError, match="semantic_source"):
        ExperimentConfig(semantic_source="attributes")
