"""Data contracts: the great-expectations rules, Data Docs, and the check of a delivery outside the pipeline."""
