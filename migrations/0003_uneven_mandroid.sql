ALTER TABLE `jobs` ADD `stdin` blob;--> statement-breakpoint
ALTER TABLE `jobs` ADD `memory` integer;--> statement-breakpoint
ALTER TABLE `jobs` ADD `cpu` real;--> statement-breakpoint
ALTER TABLE `jobs` ADD `cpuset` text;--> statement-breakpoint
ALTER TABLE `jobs` ADD `max_output_bytes` integer;--> statement-breakpoint
ALTER TABLE `jobs` ADD `callback_url` text;