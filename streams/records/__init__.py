"""Records of runs: conversations, run and task records, token-level traces, metrics (issue 14).

Hot path: `recorder` (RunRecorder, RecordingSink) and `metrics`, both synchronous and cheap.
Off the hot path: `writer` (one batched writer per event loop), `store` (the database work),
`conversations` (ownership and history), `trace` (the export_trace shape), `views`, `admin`.
"""
