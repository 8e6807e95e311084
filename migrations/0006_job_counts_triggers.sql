-- Custom SQL migration file, put your code below! --
-- job_counts follows every write to jobs.state (see src/db/schema/job-counts.ts).
CREATE TRIGGER `jobs_count_insert` AFTER INSERT ON `jobs` BEGIN
  INSERT INTO `job_counts` (`tenant`, `state`, `n`) VALUES (NEW.`tenant`, NEW.`state`, 1)
    ON CONFLICT (`tenant`, `state`) DO UPDATE SET `n` = `n` + 1;
END;
--> statement-breakpoint
CREATE TRIGGER `jobs_count_state` AFTER UPDATE OF `state` ON `jobs` WHEN OLD.`state` IS NOT NEW.`state` BEGIN
  UPDATE `job_counts` SET `n` = `n` - 1 WHERE `tenant` = OLD.`tenant` AND `state` = OLD.`state`;
  INSERT INTO `job_counts` (`tenant`, `state`, `n`) VALUES (NEW.`tenant`, NEW.`state`, 1)
    ON CONFLICT (`tenant`, `state`) DO UPDATE SET `n` = `n` + 1;
END;
--> statement-breakpoint
CREATE TRIGGER `jobs_count_delete` AFTER DELETE ON `jobs` BEGIN
  UPDATE `job_counts` SET `n` = `n` - 1 WHERE `tenant` = OLD.`tenant` AND `state` = OLD.`state`;
END;
--> statement-breakpoint
-- The jobs already stored, counted once at upgrade.
INSERT INTO `job_counts` (`tenant`, `state`, `n`) SELECT `tenant`, `state`, count(*) FROM `jobs` GROUP BY `tenant`, `state`;
