CREATE TABLE `job_counts` (
	`tenant` text NOT NULL,
	`state` text NOT NULL,
	`n` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`tenant`, `state`)
);
