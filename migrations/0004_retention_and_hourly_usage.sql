CREATE TABLE `usage_hourly` (
	`tenant` text NOT NULL,
	`hour` text NOT NULL,
	`jobs` integer DEFAULT 0 NOT NULL,
	`failures` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`tenant`, `hour`)
);
--> statement-breakpoint
CREATE INDEX `usage_hourly_hour` ON `usage_hourly` (`hour`);--> statement-breakpoint
CREATE INDEX `idempotency_keys_created` ON `idempotency_keys` (`created_at`);--> statement-breakpoint
CREATE INDEX `jobs_tenant_ended` ON `jobs` (`tenant`,`ended_at`) WHERE state NOT IN ('queued', 'running');