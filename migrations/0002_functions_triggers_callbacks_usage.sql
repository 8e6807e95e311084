CREATE TABLE `callback_deliveries` (
	`id` text PRIMARY KEY NOT NULL,
	`job_id` text NOT NULL,
	`tenant` text NOT NULL,
	`url` text NOT NULL,
	`state` text NOT NULL,
	`tries` integer DEFAULT 0 NOT NULL,
	`next_at` integer NOT NULL,
	`last_status` integer,
	`last_error` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`job_id`) REFERENCES `jobs`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `callback_deliveries_due` ON `callback_deliveries` (`state`,`next_at`);--> statement-breakpoint
CREATE INDEX `callback_deliveries_job` ON `callback_deliveries` (`job_id`);--> statement-breakpoint
CREATE TABLE `callback_tries` (
	`delivery_id` text NOT NULL,
	`n` integer NOT NULL,
	`at` integer NOT NULL,
	`status` integer,
	`error` text,
	`duration_ms` integer NOT NULL,
	PRIMARY KEY(`delivery_id`, `n`),
	FOREIGN KEY (`delivery_id`) REFERENCES `callback_deliveries`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `functions` (
	`tenant` text NOT NULL,
	`name` text NOT NULL,
	`version` integer NOT NULL,
	`image` text NOT NULL,
	`command` text NOT NULL,
	`timeout` real,
	`retries` integer NOT NULL,
	`cpu` real,
	`cpuset` text,
	`memory` integer,
	`env` text NOT NULL,
	`max_concurrent` integer,
	`content_type` text NOT NULL,
	`description` text,
	`callback_url` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `name`)
);
--> statement-breakpoint
CREATE TABLE `tenant_secrets` (
	`tenant` text PRIMARY KEY NOT NULL,
	`callback_secret_enc` text NOT NULL,
	`prev_callback_secret_enc` text,
	`prev_expires_at` integer
);
--> statement-breakpoint
CREATE TABLE `trigger_deliveries` (
	`trigger_id` text NOT NULL,
	`delivery_id` text NOT NULL,
	`job_id` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`trigger_id`, `delivery_id`),
	FOREIGN KEY (`trigger_id`) REFERENCES `triggers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `trigger_deliveries_created` ON `trigger_deliveries` (`created_at`);--> statement-breakpoint
CREATE TABLE `triggers` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant` text NOT NULL,
	`function` text NOT NULL,
	`kind` text NOT NULL,
	`secret_enc` text NOT NULL,
	`prev_secret_enc` text,
	`prev_expires_at` integer,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`tenant`,`function`) REFERENCES `functions`(`tenant`,`name`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `triggers_function` ON `triggers` (`tenant`,`function`);--> statement-breakpoint
CREATE TABLE `usage_daily` (
	`tenant` text NOT NULL,
	`day` text NOT NULL,
	`jobs` integer DEFAULT 0 NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`cpu_seconds` real DEFAULT 0 NOT NULL,
	`wall_seconds` real DEFAULT 0 NOT NULL,
	`gb_seconds` real DEFAULT 0 NOT NULL,
	`peak_memory_bytes` integer DEFAULT 0 NOT NULL,
	`failures` text DEFAULT '{}' NOT NULL,
	PRIMARY KEY(`tenant`, `day`)
);
--> statement-breakpoint
CREATE INDEX `usage_daily_day` ON `usage_daily` (`day`);--> statement-breakpoint
ALTER TABLE `attempts` ADD `wall_seconds` real;--> statement-breakpoint
ALTER TABLE `jobs` ADD `function` text;--> statement-breakpoint
ALTER TABLE `jobs` ADD `function_version` integer;--> statement-breakpoint
CREATE INDEX `jobs_tenant_function` ON `jobs` (`tenant`,`function`,`id`) WHERE function IS NOT NULL;