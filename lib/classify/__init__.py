"""The generative classifier (seed 004): one GPT-2 language model per class, a document labelled by
the class whose model gives it the highest likelihood.

    settings.py   ClassifySettings: the labelled source, the splits, the scoring (plain data)
    sources.py    labelled documents from CSV/TSV/JSONL, a folder per class, Debian's fortunes
    splits.py     seeded, stratified train/val/test splits of whole, distinct documents
    corpus.py     the prepared corpus on disk: meta.json, the test documents, the class folders
    score.py      a document's log-likelihood under a model, in windows, batched (torch)
    metrics.py    accuracy, macro-F1, confusion, probabilities, perplexities from saved scores
    report.py     a classifier's report files, and the comparison of a results folder's classifiers
    baseline.py   tf-idf n-grams with logistic regression (scikit-learn, optional)

gpt2/prepare_labelled.py tokenizes a source into the corpus; the test matrix trains one run per
class (lib/study/matrix.py); gpt2/classify.py scores, reports and labels new documents.
"""
