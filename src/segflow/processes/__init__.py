"""Processes segflow starts or lives under: commands run with a timeout (their whole process
group stopped on expiry), and a stage that stops when the dvc process that started it dies."""
