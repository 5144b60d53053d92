"""chipbook: the models, data, figures and explorables of the book
"Why AI-chip startups pivot to inference"."""
