CREATE TABLE `attempts` (
	`job_id` text NOT NULL,
	`n` integer NOT NULL,
	`tenant` text NOT NULL,
	`agent` text NOT NULL,
	`fence` integer NOT NULL,
	`container` text,
	`claimed_at` integer NOT NULL,
	`started_at` integer,
	`ended_at` integer,
	`exit_code` integer,
	`signal` text,
	`reason` text,
	`cpu_seconds` real,
	`peak_memory_bytes` integer,
	PRIMARY KEY(`job_id`, `n`),
	FOREIGN KEY (`job_id`) REFERENCES `jobs`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `attempts_tenant_ended` ON `attempts` (`tenant`,`ended_at`);--> statement-breakpoint
CREATE TABLE `idempotency_keys` (
	`tenant` text NOT NULL,
	`key` text NOT NULL,
	`body_hash` text NOT NULL,
	`job_id` text,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `key`)
);
--> statement-breakpoint
CREATE TABLE `jobs` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant` text NOT NULL,
	`name` text,
	`state` text NOT NULL,
	`image` text NOT NULL,
	`spec` text NOT NULL,
	`retries` integer NOT NULL,
	`failures` integer DEFAULT 0 NOT NULL,
	`platform_failures` integer DEFAULT 0 NOT NULL,
	`attempt_count` integer DEFAULT 0 NOT NULL,
	`fence` integer DEFAULT 0 NOT NULL,
	`run_after` integer NOT NULL,
	`agent` text,
	`lease_expires_at` integer,
	`cancel_requested` integer DEFAULT false NOT NULL,
	`exit_code` integer,
	`signal` text,
	`reason` text,
	`created_at` integer NOT NULL,
	`started_at` integer,
	`ended_at` integer,
	`output_bytes` integer DEFAULT 0 NOT NULL,
	`output_truncated` integer DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `jobs_tenant_name` ON `jobs` (`tenant`,`name`);--> statement-breakpoint
CREATE INDEX `jobs_tenant_id` ON `jobs` (`tenant`,`id`);--> statement-breakpoint
CREATE INDEX `jobs_claimable` ON `jobs` (`tenant`,`run_after`,`id`) WHERE state = 'queued';--> statement-breakpoint
CREATE INDEX `jobs_running` ON `jobs` (`tenant`,`lease_expires_at`) WHERE state = 'running';--> statement-breakpoint
CREATE TABLE `output` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`job_id` text NOT NULL,
	`attempt` integer NOT NULL,
	`stream` text NOT NULL,
	`data` blob NOT NULL,
	FOREIGN KEY (`job_id`) REFERENCES `jobs`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `output_job` ON `output` (`job_id`,`id`);--> statement-breakpoint
CREATE TABLE `tenants` (
	`id` text PRIMARY KEY NOT NULL,
	`quota` text DEFAULT '{}' NOT NULL,
	`created_at` integer NOT NULL
);
