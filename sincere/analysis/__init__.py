"""Analysis of run directories: bootstrap statistics, embedding similarity, tables and figures."""
